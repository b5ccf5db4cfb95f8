"""The segmentation pipeline. Its stages, in order (each one function call in `Predictor.segment`):

    1 read        SimpleITK header (geometry), voxels inflated by ISA-L for NIfTI; a 3D scalar scan or a one-line
                  InputError. Meanwhile the runtime opens (first case; its compiled parts from the model cache)
                  and gets ready for the shape it will get (where it compiles per shape).
    2 canonical   permute/flip the array to the card's orientation, as int16 HU (no copy when already canonical)
    [locate]      scans longer than the card's canvas: a small network finds the organs' z-range; the slices
                  around it (a view, no copy) are what the graph sees; slices outside are background (locate.py)
    3-5 graph     one ONNX graph: anti-aliased downsample + HU windows -> network -> ArgMax (low resolution)
                  ("slices" cards: 2D networks on batches of axial slices, resampled in-plane; slice_graph.py)
    6 labels      class -> FLARE label lookup, connected-component rule per organ (at low resolution)
    7 upsample    nearest, back onto the canonical full-resolution grid (and into the whole scan's z-range)
    [fine]        cards with a fine stage: crop around the organs, segment it at high resolution and paste it back
                  (abdoseg.inference.fine: torch on CUDA, else the fine graph in the CPU runtime)
    8 write       orient back and write on the input's exact grid, atomically
nnU-Net cards (abdoseg import-nnunet) run through their own runner, as nnU-Net runs them: read, [coarse stage],
preprocess, network (sliding windows over the folds), export, [labels], write (abdoseg.inference.nnunet).
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import SimpleITK as sitk

from abdoseg.inference.card import (DEFAULT_CARD, CardError, ModelCard, card_path, load_card,
                                   verify_checksum, verify_file)
from abdoseg.inference.graph.runtime import ModelLoadError, RuntimeName, Session, open_session
from abdoseg.inference.grid.geometry import axis_maps, upsample_labels
from abdoseg.inference.grid.orientation import Reorientation, orientation_of
from abdoseg.inference.grid.scan import Grid, canonical_hu
from abdoseg.inference.io.read import read_array, read_header
from abdoseg.inference.io.write import write_labels_atomic
from abdoseg.inference.locate import ZRange, locator_input, region_from_probabilities, segment_window
from abdoseg.inference.nnunet.card import is_nnunet_card
from abdoseg.inference.postprocess import classes_to_labels, keep_largest_components

if TYPE_CHECKING:
    import onnx


@dataclass
class StageClock:
    """Seconds per stage, in the order the stages ran, and any stage's extra figures."""

    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, dict] = field(default_factory=dict)  # e.g. the fine stage's figures, the located range
    organs_found: list[str] | None = None  # organ names present in the result (set by Predictor.segment)
    _t: float = field(default_factory=time.perf_counter)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._t
        self._t = now


def _composed_model(card: ModelCard, model_path: Path) -> "onnx.ModelProto":
    """The composed graph: the file itself, or (for a network-only file) the network composed at load time."""
    import onnx

    if card.graph == "composed":
        return onnx.load(str(model_path))
    from abdoseg.inference.graph.preprocess_graph import compose_with_network

    return compose_with_network(onnx.load(str(model_path)), card)


def open_model_session(card: ModelCard, model_path: Path, runtime: RuntimeName, threads: int, use_cuda: bool,
                       cache_dir: Path | None) -> Session:
    """The card's graph as one Session: on a CPU, a 3D card's graph as cached parts (abdoseg.inference.graph.staged:
    the graph whole, or in z-slabs where the card says where to cut its network); over batches of slices for
    "slices" cards; else (CUDA) the composed graph as one."""
    if card.geometry.mode != "slices" and not use_cuda:
        from abdoseg.inference.graph.staged import open_parts

        return open_parts(card, lambda: _composed_model(card, model_path), runtime, threads, cache_dir)
    model = model_path if card.graph == "composed" else _composed_model(card, model_path).SerializeToString()
    session = open_session(model, runtime, threads, use_cuda, cache_dir)
    if card.geometry.mode == "slices":  # 2D networks: the slice graph over bounded batches of slices
        from abdoseg.inference.graph.slice_graph import SliceBatches

        session = SliceBatches(session, card.geometry.shape[0])
    return session


def _open_or_explain(opener: Callable[[], Session], path: Path, what: str, runtime: RuntimeName) -> Session:
    """opener(), or a one-line ModelLoadError naming the file."""
    try:
        return opener()
    except Exception as e:  # noqa: BLE001 - whatever the runtime or onnx raise for a file they cannot use
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelLoadError(f"{path}: {runtime} cannot open {what} ({reason})") from e


@dataclass(frozen=True)
class _RuntimeChoice:
    """How this predictor opens graphs (the segmentation graph now, the locator when first needed)."""

    runtime: RuntimeName = "openvino"
    threads: int = 1
    cache_dir: Path | None = None


class Predictor:
    """Load once, segment many. Build with `Predictor.load`; `segment` works on arrays, `predict_file` on paths."""

    def __init__(self, card: ModelCard, session: Session | Future | None = None, fine=None,
                 runtime: _RuntimeChoice = _RuntimeChoice()) -> None:
        self.card = card
        self._session = session
        self.fine = fine
        self.runtime = runtime
        self._locator: Session | None = None
        self.session_load_s: float | None = None  # seconds the runtime took to open (when opened by `load`)

    @property
    def session(self) -> Session:
        """The runtime session; waits for a background load to finish (ModelLoadError if it failed)."""
        if isinstance(self._session, Future):
            self._session = self._session.result()
        if self._session is None:
            raise ModelLoadError("no runtime session: build the Predictor with Predictor.load")
        return self._session

    @property
    def locator(self) -> Session:
        """The locate stage's session, opened on first use (checksum checked then)."""
        if self._locator is None:
            spec = self.card.locator
            if spec is None:
                raise ModelLoadError(f"card {self.card.name!r} has no locator")
            path = Path(spec.model_file)
            verify_file(path, spec.sha256, f"the locator of card {self.card.name!r}")
            choice = self.runtime
            self._locator = _open_or_explain(lambda: open_session(path, choice.runtime, choice.threads, False,
                                                                  choice.cache_dir), path, "the locator", choice.runtime)
        return self._locator

    @classmethod
    def load(cls, card_spec: str | Path = DEFAULT_CARD, model_path: Path | None = None,
             runtime: RuntimeName = "openvino", threads: int = 1, device: str = "cpu",
             cache_dir: Path | None = None, background: bool = False, tta: bool = False,
             fine: bool = True) -> "Predictor":
        """Read the card and check the model's checksum; open the runtime now, or in a background thread
        (`background`: the caller reads its first scan meanwhile; `session` waits for it). An nnU-Net card gets
        its own runner (abdoseg.inference.nnunet: same interface; `tta`: nnU-Net's mirroring). The card's fine
        stage, when it has one and `fine`, opens too: torch on `device` "cuda", else the CPU `runtime`."""
        if is_nnunet_card(card_path(card_spec)):
            from abdoseg.inference.nnunet.predictor import NnunetPredictor

            return NnunetPredictor.load(card_path(card_spec), runtime, threads, device, cache_dir, background, tta)
        if tta:
            raise CardError(f"--tta: card {str(card_spec)!r} has no mirroring (nnU-Net cards have)")
        card, model_path = load_card(card_spec, model_path)
        verify_checksum(card, model_path)
        stage = None
        if card.fine is not None and fine:
            from abdoseg.inference.fine import open_fine_stage

            stage = open_fine_stage(Path(card.fine), device, runtime, threads, cache_dir)
        predictor = cls(card, fine=stage, runtime=_RuntimeChoice(runtime, threads, cache_dir))
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
        session = _open_or_explain(lambda: open_model_session(self.card, model_path, runtime, threads, use_cuda,
                                                              cache_dir), model_path, "this model", runtime)
        self.session_load_s = time.perf_counter() - t0
        return session

    def needs_locate(self, shape: tuple[int, ...], spacing: tuple[float, float, float]) -> bool:
        """Whether a canonical scan of this shape and spacing is longer than the card's canvas."""
        return shape[0] * spacing[0] > self.card.locate_above_mm + 1e-6

    def graph_shape(self, shape: tuple[int, ...], spacing: tuple[float, float, float]) -> tuple[int, ...] | None:
        """The "ct" shape the graph will most likely get for a canonical scan (None: known only after locate)."""
        if not self.needs_locate(shape, spacing):
            return tuple(shape)
        window_mm = self.card.segment_window_mm
        if window_mm <= 0:
            return None
        return (min(shape[0], int(math.ceil(window_mm / spacing[0] - 1e-6))), *shape[1:])

    def locate(self, ct: np.ndarray, spacing: tuple[float, float, float], clock: StageClock) -> ZRange:
        """The canonical slices the segmentation sees: the whole scan, or the window around the organs."""
        whole = ZRange(0, ct.shape[0], spacing[0])
        if not self.needs_locate(ct.shape, spacing):
            return whole
        spec = self.card.locator
        prob = np.asarray(self.locator.run({"image": locator_input(ct, spacing, spec)})).reshape(-1)
        region = region_from_probabilities(prob, ct.shape[0], spacing[0], spec)
        window = region if region.empty else segment_window(region, ct.shape[0], self.card.segment_window_mm)
        clock.details["locate"] = {"organs": region.as_dict(), "window": window.as_dict(),
                                   "scan_mm": round(ct.shape[0] * spacing[0], 1),
                                   "max_probability": round(float(prob.max()), 4)}
        clock.lap("locate")
        return window

    def segment(self, ct: np.ndarray, spacing: tuple[float, float, float], clock: StageClock | None = None) -> np.ndarray:
        """Stages locate-7 on a canonical (z,y,x) int16 HU array -> uint8 FLARE labels on the same grid."""
        clock = clock or StageClock()
        window = self.locate(ct, spacing, clock)
        clock.organs_found = []
        if window.stop - window.start == ct.shape[0]:  # the whole scan: no second full-size array
            full = self._segment_slices(ct, spacing, clock)
        else:
            full = np.zeros(ct.shape, np.uint8)
            if not window.empty:
                full[window.start:window.stop] = self._segment_slices(ct[window.start:window.stop], spacing, clock)
        if self.fine is not None and clock.organs_found:
            full, clock.details["fine"] = self.fine.run(ct, spacing, full)
            names = self.card.label_map.names  # the organs of the result: the fine stage's, not the coarse ones
            clock.organs_found = [names.get(k, str(k)) for k in clock.details["fine"]["labels"]]
            clock.lap("fine")
        return full

    def _segment_slices(self, ct: np.ndarray, spacing: tuple[float, float, float], clock: StageClock) -> np.ndarray:
        """Stages 3-7 on consecutive canonical slices: the graph's canvas is centred on them."""
        feeds = {"ct": ct}
        if "spacing" in self.session.input_names:
            feeds["spacing"] = np.asarray(spacing, dtype=np.float32)
        classes = self.session.run(feeds)
        clock.lap("graph")
        maps = axis_maps(ct.shape, spacing, self.card.geometry)
        low_spacing = tuple(m.step * s for m, s in zip(maps, spacing))
        labels = keep_largest_components(classes_to_labels(classes, self.card.class_to_label),
                                         self.card.keep_components, spacing=low_spacing)
        possible = sorted(set(self.card.class_to_label) - {0})  # a test per label: bincount cast 3.5M voxels to int64
        clock.organs_found = [self.card.label_map.names.get(k, str(k)) for k in possible if (labels == k).any()]
        clock.lap("labels")
        full = upsample_labels(labels, maps)
        clock.lap("upsample")
        return full

    def segment_image(self, image, clock: StageClock | None = None) -> np.ndarray:
        """Stages 2-7: a SimpleITK image -> uint8 labels in the image's stored (z,y,x) order."""
        clock = clock or StageClock()
        ct, spacing, orient = canonical_hu(sitk.GetArrayViewFromImage(image), Grid.of(image), self.card.orientation)
        clock.lap("canonical")
        labels = self.segment(ct, spacing, clock)
        return orient.invert(labels)

    def _prepare(self, shape: tuple[int, ...], spacing: tuple[float, float, float]) -> None:
        """Ahead of a scan: compile the graph for the shape it will get; open the locator if it will be needed."""
        graph_shape = self.graph_shape(shape, spacing)
        if graph_shape is not None:
            self.session.prepare(graph_shape)
        if self.needs_locate(shape, spacing):
            self.locator  # noqa: B018 - opens it

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
        shape, spacing = orient.shape(grid.size[::-1]), orient.spacing(tuple(grid.spacing)[::-1])
        with ThreadPoolExecutor(max_workers=1) as pool:
            prepared = pool.submit(self._prepare, shape, spacing)
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
