"""The segmentation pipeline. Its stages, in order (each one function call in `Predictor.segment`):

    1 read        SimpleITK header (geometry), voxels inflated by ISA-L for NIfTI; a 3D scalar scan or a one-line
                  InputError. Meanwhile the runtime opens (first case) and compiles for the scan's shape.
    2 canonical   permute/flip the array to the card's orientation, as int16 HU (no copy when already canonical)
    3-5 graph     one ONNX graph: anti-aliased downsample + HU windows -> network -> ArgMax (low resolution)
    6 labels      class -> FLARE label lookup, largest connected components per organ (at low resolution)
    7 upsample    nearest, back onto the canonical full-resolution grid
    [fine]        --device cuda: crop around the organs and segment at high resolution (inference.fine)
    8 write       orient back and write on the input's exact grid, atomically
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from inference.card import ModelCard, load_card, verify_checksum
from inference.geometry import axis_maps, upsample_labels
from inference.io import read_array, read_header, write_labels_atomic
from inference.orientation import Reorientation, orientation_of
from inference.postprocess import classes_to_labels, keep_largest_components
from inference.runtime import ModelLoadError, RuntimeName, Session, open_session
from inference.scan import Grid, canonical_hu

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_CARD = WEIGHTS_DIR / "abdoseg_coarse.json"


@dataclass
class StageClock:
    """Seconds per stage, in the order the stages ran, and any stage's extra figures."""

    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, dict[str, float]] = field(default_factory=dict)  # e.g. the fine stage's own figures
    _t: float = field(default_factory=time.perf_counter)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._t
        self._t = now


def _model_bytes_or_path(card: ModelCard, model_path: Path) -> Path | bytes:
    """The composed graph: the file itself, or (for a network-only file) the network composed at load time."""
    if card.graph == "composed":
        return model_path
    import onnx

    from inference.preprocess_graph import compose_with_network

    return compose_with_network(onnx.load(str(model_path)), card).SerializeToString()


class Predictor:
    """Load once, segment many. Build with `Predictor.load`; `segment` works on arrays, `predict_file` on paths."""

    def __init__(self, card: ModelCard, session: Session | Future | None = None, fine=None) -> None:
        self.card = card
        self._session = session
        self.fine = fine
        self.session_load_s: float | None = None  # seconds the runtime took to open (when opened by `load`)

    @property
    def session(self) -> Session:
        """The runtime session; waits for a background load to finish (ModelLoadError if it failed)."""
        if isinstance(self._session, Future):
            self._session = self._session.result()
        if self._session is None:
            raise ModelLoadError("no runtime session: build the Predictor with Predictor.load")
        return self._session

    @classmethod
    def load(cls, card_spec: str | Path = DEFAULT_CARD, model_path: Path | None = None,
             runtime: RuntimeName = "openvino", threads: int = 1, device: str = "cpu",
             cache_dir: Path | None = None, background: bool = False) -> "Predictor":
        """Read the card and check the model's checksum; open the runtime now, or in a background thread
        (`background`: the caller reads its first scan meanwhile; `session` waits for it)."""
        card, model_path = load_card(card_spec, model_path)
        verify_checksum(card, model_path)
        fine = None
        if device == "cuda":
            from inference.fine import FineStage

            fine = FineStage.load(WEIGHTS_DIR, device)
        predictor = cls(card, fine=fine)
        args = (model_path, runtime, threads, device == "cuda", cache_dir)
        if background:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="abdoseg-load")
            predictor._session = pool.submit(predictor._open_runtime, *args)
            pool.shutdown(wait=False)
        else:
            predictor._session = predictor._open_runtime(*args)
        return predictor

    def _open_runtime(self, model_path: Path, runtime: RuntimeName, threads: int, use_cuda: bool,
                      cache_dir: Path | None) -> Session:
        t0 = time.perf_counter()
        try:
            session = open_session(_model_bytes_or_path(self.card, model_path), runtime, threads, use_cuda, cache_dir)
        except Exception as e:  # noqa: BLE001 - whatever the runtime or onnx raise for a file they cannot use
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ModelLoadError(f"{model_path}: {runtime} cannot open this model ({reason})") from e
        self.session_load_s = time.perf_counter() - t0
        return session

    def segment(self, ct: np.ndarray, spacing: tuple[float, float, float], clock: StageClock | None = None) -> np.ndarray:
        """Stages 3-7 on a canonical (z,y,x) int16 HU array -> uint8 FLARE labels on the same grid."""
        clock = clock or StageClock()
        feeds = {"ct": ct}
        if "spacing" in self.session.input_names:
            feeds["spacing"] = np.asarray(spacing, dtype=np.float32)
        classes = self.session.run(feeds)
        clock.lap("graph")
        labels = keep_largest_components(classes_to_labels(classes, self.card.class_to_label), self.card.keep_components)
        clock.lap("labels")
        full = upsample_labels(labels, axis_maps(ct.shape, spacing, self.card.geometry))
        clock.lap("upsample")
        if self.fine is not None:
            full, clock.details["fine"] = self.fine.run(ct, spacing, full)
            clock.lap("fine")
        return full

    def segment_image(self, image, clock: StageClock | None = None) -> np.ndarray:
        """Stages 2-7: a SimpleITK image -> uint8 labels in the image's stored (z,y,x) order."""
        clock = clock or StageClock()
        ct, spacing, orient = canonical_hu(sitk.GetArrayViewFromImage(image), Grid.of(image), self.card.orientation)
        clock.lap("canonical")
        labels = self.segment(ct, spacing, clock)
        return orient.invert(labels)

    def predict_file(self, path: Path, out_path: Path, clock: StageClock | None = None) -> tuple[int, ...]:
        """Stages 1-8: read `path`, write the label map to `out_path` atomically; returns the input size.

        While the voxels are read, a helper thread waits for the runtime (when it is still opening) and compiles
        it for this scan's shape. The raw voxels are dropped once the canonical array exists (when that needed
        a copy), so a large scan is not held twice while the network runs.
        """
        clock = clock or StageClock()
        reader = read_header(path)
        grid = Grid.of(reader)
        orient = Reorientation.between(orientation_of(grid.direction), self.card.orientation)
        shape = orient.shape(grid.size[::-1])
        with ThreadPoolExecutor(max_workers=1) as pool:
            prepared = pool.submit(lambda: self.session.prepare(shape))
            voxels = read_array(reader)
            prepared.result()
        clock.lap("read")
        ct, spacing, orient = canonical_hu(voxels, grid, self.card.orientation)
        del voxels  # freed here unless `ct` is a view of it
        clock.lap("canonical")
        labels = orient.invert(self.segment(ct, spacing, clock))
        del ct
        write_labels_atomic(labels, grid, out_path)
        clock.lap("write")
        return grid.size
