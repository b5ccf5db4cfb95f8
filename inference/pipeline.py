"""The segmentation pipeline. Its stages, in order (each one function call in `Predictor.segment`):

    1 read        SimpleITK; a 3D scalar scan or a one-line InputError (the runtime compiles for its shape meanwhile)
    2 canonical   permute/flip the array to the card's orientation, as int16 HU (no copy when already canonical)
    3-5 graph     one ONNX graph: anti-aliased downsample + HU windows -> network -> ArgMax (low resolution)
    6 labels      class -> FLARE label lookup, largest connected components per organ (at low resolution)
    7 upsample    nearest, back onto the canonical full-resolution grid
    [fine]        --device cuda: crop around the organs and segment at high resolution (inference.fine)
    8 write       orient back and write on the input's exact grid, atomically
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.card import ModelCard, load_card, verify_checksum
from inference.geometry import axis_maps, upsample_labels
from inference.io import read_header, read_voxels, write_labels_atomic
from inference.orientation import Reorientation, orientation_of
from inference.postprocess import classes_to_labels, keep_largest_components
from inference.runtime import RuntimeName, Session, open_session
from inference.scan import Grid, canonical_hu, sitk_buffer

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

    def __init__(self, card: ModelCard, session: Session, fine=None) -> None:
        self.card = card
        self.session = session
        self.fine = fine

    @classmethod
    def load(cls, card_spec: str | Path = DEFAULT_CARD, model_path: Path | None = None,
             runtime: RuntimeName = "openvino", threads: int = 1, device: str = "cpu",
             cache_dir: Path | None = None) -> "Predictor":
        card, model_path = load_card(card_spec, model_path)
        verify_checksum(card, model_path)
        fine = None
        if device == "cuda":
            from inference.fine import FineStage

            fine = FineStage.load(WEIGHTS_DIR, device)
        session = open_session(_model_bytes_or_path(card, model_path), runtime, threads,
                               use_cuda=device == "cuda", cache_dir=cache_dir)
        return cls(card, session, fine)

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
        ct, spacing, orient = canonical_hu(image, self.card.orientation)
        clock.lap("canonical")
        labels = self.segment(ct, spacing, clock)
        return orient.invert(labels)

    def predict_file(self, path: Path, out_path: Path, clock: StageClock | None = None) -> tuple[int, ...]:
        """Stages 1-8: read `path`, write the label map to `out_path` atomically; returns the input size.

        The SimpleITK image is dropped as soon as its voxels are in the canonical array (when that needed a
        copy), so a large scan is not held twice while the network runs.
        """
        clock = clock or StageClock()
        reader = read_header(path)
        orient = Reorientation.between(orientation_of(reader.GetDirection()), self.card.orientation)
        with ThreadPoolExecutor(max_workers=1) as pool:  # compile for this shape while the voxels decompress
            prepared = pool.submit(self.session.prepare, orient.shape(reader.GetSize()[::-1]))
            image = read_voxels(reader)
            prepared.result()
        grid = Grid.of(image)
        clock.lap("read")
        ct, spacing, orient = canonical_hu(image, self.card.orientation)
        if not np.shares_memory(ct, sitk_buffer(image)):
            del image
        clock.lap("canonical")
        labels = orient.invert(self.segment(ct, spacing, clock))
        del ct
        write_labels_atomic(labels, grid, out_path)
        clock.lap("write")
        return grid.size
