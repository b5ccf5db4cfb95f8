"""The runner of nnU-Net cards: what `abdoseg.inference.pipeline.Predictor.load` returns for one.

Same interface as the pipeline's Predictor (`load`, `segment`, `segment_image`, `predict_file`, `card.label_map`,
`session.description`), so the command line, the cohort workers and the outputs take it unchanged. nnU-Net reads a
scan as stored (no reorientation: its networks learnt the stored axes), so this runner does too, and the output is
written on the input's exact grid. Stages: read, [coarse: the previous stage's card, cascades only], preprocess,
network, export, [labels: the card's component rule, if it has one], write (abdoseg.inference.nnunet.model).
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abdoseg.inference.card import CardError
from abdoseg.inference.graph.runtime import ModelLoadError, RuntimeName, open_session
from abdoseg.inference.grid.scan import Grid
from abdoseg.inference.io.read import read_array, read_header
from abdoseg.inference.io.write import write_labels_atomic
from abdoseg.inference.nnunet.card import NnunetCard, load_nnunet_card
from abdoseg.inference.nnunet.model import NnunetModel, Timings
from abdoseg.inference.nnunet.windows import INPUT, FoldEnsemble
from abdoseg.inference.postprocess import keep_largest_components


@dataclass(frozen=True)
class RunChoice:
    """How the fold sessions open and run: runtime, threads, CUDA (onnxruntime's provider), cache, mirroring."""

    runtime: RuntimeName = "openvino"
    threads: int = 1
    use_cuda: bool = False
    cache_dir: Path | None = None
    tta: bool = False


class SessionsInfo:
    """What the command line prints about the runtime (`description`) for a predictor's fold sessions."""

    def __init__(self, description: str) -> None:
        self.description = description


def resolve_nnunet_device(requested: str) -> tuple[str, str]:
    """The device an nnU-Net card runs on, and a note when CUDA was asked for but cannot be used: 'cuda' when
    asked ('auto': when a GPU is present) and onnxruntime has its CUDA provider, else 'cpu'."""
    from abdoseg.inference.process.resources import gpu_present

    if requested == "cpu" or (requested == "auto" and not gpu_present()):
        return "cpu", ""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "cpu", "onnxruntime has no CUDA provider here"
    return "cuda", ""


def open_model(card: NnunetCard, choice: RunChoice) -> NnunetModel:
    """The card's folds as sessions compiled for one window shape, behind a FoldEnsemble."""
    card.verify_files()
    batch = 8 if card.configuration == "2d" else 1
    shape = (batch, card.in_channels, *card.patch_size)
    sessions = []
    for fold in card.folds:
        path = card.onnx_path(fold)
        try:
            session = open_session(path, choice.runtime, choice.threads, choice.use_cuda, choice.cache_dir)
            session.prepare_inputs({INPUT: shape})
        except Exception as e:  # whatever the runtime raises for a file it cannot use
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ModelLoadError(f"{path}: {choice.runtime} cannot open fold {fold} ({reason})") from e
        sessions.append(session)
    return NnunetModel(card, FoldEnsemble(sessions, card.mirror_axes if choice.tta else ()))


class NnunetPredictor:
    """Load once, segment many, for an nnU-Net card (and its previous stage, for a cascade)."""

    def __init__(self, card: NnunetCard, choice: RunChoice) -> None:
        self.card = card
        self.choice = choice
        self.coarse_card = self._previous_stage(card)
        self._models: Future | tuple[NnunetModel, NnunetModel | None] | None = None
        self.session_load_s: float | None = None
        tta = f", mirroring over axes {list(card.mirror_axes)}" if choice.tta and card.mirror_axes else ""
        device = "CUDA" if choice.use_cuda else "CPU"
        self._info = SessionsInfo(f"nnU-Net {card.configuration}, {len(card.folds)} fold(s), {choice.runtime} "
                                  f"{device}, {choice.threads} threads{tta}")

    @staticmethod
    def _previous_stage(card: NnunetCard) -> NnunetCard | None:
        if card.previous_stage is None:
            return None
        coarse = load_nnunet_card(card.folder / card.previous_stage.card)
        if coarse.configuration != card.previous_stage.configuration or coarse.labels != card.labels:
            raise CardError(f"{card.folder / card.previous_stage.card}: previous stage of {card.name!r} must be a "
                            f"{card.previous_stage.configuration} card with the same labels")
        return coarse

    @classmethod
    def load(cls, card_path: str | Path, runtime: RuntimeName = "openvino", threads: int = 1, device: str = "cpu",
             cache_dir: Path | None = None, background: bool = False, tta: bool = False) -> NnunetPredictor:
        """Read the card (and its previous stage's) and check the files; open the sessions now or in a thread."""
        card = load_nnunet_card(card_path)
        predictor = cls(card, RunChoice(runtime, threads, device == "cuda", cache_dir, tta))
        card.verify_files()
        if predictor.coarse_card is not None:
            predictor.coarse_card.verify_files()
        if background:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="abdoseg-load")
            predictor._models = pool.submit(predictor._open)
            pool.shutdown(wait=False)
        else:
            predictor._models = predictor._open()
        return predictor

    def _open(self) -> tuple[NnunetModel, NnunetModel | None]:
        t0 = time.perf_counter()
        coarse = None if self.coarse_card is None else open_model(self.coarse_card, self.choice)
        models = (open_model(self.card, self.choice), coarse)
        self.session_load_s = time.perf_counter() - t0
        return models

    @property
    def session(self) -> SessionsInfo:
        """What the runtime is, once the sessions are open (waits for a background load, as the pipeline's)."""
        self.models  # noqa: B018 - waits; raises ModelLoadError if the load failed
        return self._info

    @property
    def models(self) -> tuple[NnunetModel, NnunetModel | None]:
        """The card's model and its previous stage's (None unless a cascade); waits for a background load."""
        if isinstance(self._models, Future):
            self._models = self._models.result()
        if self._models is None:
            raise ModelLoadError("no sessions: build the predictor with NnunetPredictor.load")
        return self._models

    def segment(self, image: np.ndarray, spacing: tuple[float, float, float],
                clock: Timings | None = None) -> np.ndarray:
        """uint8 labels for a (z, y, x) array as stored with its (z, y, x) spacing; `clock` (e.g. the pipeline's
        StageClock) gets the steps' seconds and figures."""
        model, coarse = self.models
        clock = clock or Timings()
        prior = None if coarse is None else coarse.predict(image, spacing, clock=clock, stage="coarse")
        labels = model.predict(image, spacing, prior, clock)
        if self.card.keep_components:
            labels = keep_largest_components(labels, self.card.keep_components, spacing=tuple(spacing))
            clock.lap("labels")
        if hasattr(clock, "organs_found"):
            clock.organs_found = [name for k, name in self.card.label_map.organs.items() if (labels == k).any()]
        return labels

    def segment_image(self, image: sitk.Image, clock: Timings | None = None) -> np.ndarray:
        """A SimpleITK image -> uint8 labels in its stored (z, y, x) order."""
        return self.segment(sitk.GetArrayViewFromImage(image), tuple(image.GetSpacing())[::-1], clock)

    def predict_file(self, path: Path, out_path: Path, clock: Timings | None = None) -> tuple[int, ...]:
        """Read `path`, write the label map to `out_path` atomically on the input's grid; returns the input size."""
        reader = read_header(path)
        grid = Grid.of(reader)
        voxels = read_array(reader)
        self.models  # noqa: B018 - the sessions finish opening (background load) before the clock's read lap
        clock = clock or Timings()
        clock.lap("read")
        labels = self.segment(voxels, tuple(grid.spacing)[::-1], clock)
        del voxels
        write_labels_atomic(labels, grid, out_path)
        clock.lap("write")
        return grid.size
