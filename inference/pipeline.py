"""The segmentation pipeline. Its stages, in order (each one function call in `Predictor.segment`):

    1 read        SimpleITK; a 3D scalar scan or a one-line InputError
    2 canonical   permute/flip the array to the card's orientation (a view), float32 HU copy for the graph
    3-5 graph     one ONNX graph: anti-aliased downsample + HU windows -> network -> ArgMax (low resolution)
    6 labels      class -> FLARE label lookup, largest connected components per organ (at low resolution)
    7 upsample    nearest, back onto the canonical full-resolution grid
    [fine]        --device cuda: crop around the organs and segment at high resolution (inference.fine)
    8 write       orient back and write on the input's exact grid, atomically
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.card import ModelCard, load_card, verify_checksum
from inference.geometry import axis_maps, upsample_labels
from inference.orientation import Reorientation, orientation_of
from inference.postprocess import classes_to_labels, keep_largest_components
from inference.runtime import RuntimeName, Session, open_session

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
DEFAULT_CARD = WEIGHTS_DIR / "abdoseg_coarse.json"


@dataclass
class StageClock:
    """Seconds per stage, in the order the stages ran."""

    seconds: dict[str, float] = field(default_factory=dict)
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
        """Stages 3-7 on a canonical (z,y,x) HU array -> uint8 FLARE labels on the same grid."""
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
            full, info = self.fine.run(ct, spacing, full)
            clock.seconds.update({f"fine_{k}": v for k, v in info.items()})
            clock.lap("fine")
        return full

    def segment_image(self, image, clock: StageClock | None = None) -> np.ndarray:
        """Stages 2-8 minus the write: a SimpleITK image -> uint8 labels in the image's stored (z,y,x) order."""
        import SimpleITK as sitk

        clock = clock or StageClock()
        orient = Reorientation.between(orientation_of(image.GetDirection()), self.card.orientation)
        stored = sitk.GetArrayViewFromImage(image)
        ct = np.empty(orient.apply(stored).shape, dtype=np.float32)
        ct[...] = orient.apply(stored)  # one pass: permute/flip + cast
        if not np.issubdtype(stored.dtype, np.integer):
            np.nan_to_num(ct, copy=False, nan=-1024.0, posinf=3071.0, neginf=-1024.0)
        spacing = orient.spacing(image.GetSpacing()[::-1])
        clock.lap("canonical")
        labels = self.segment(ct, spacing, clock)
        return orient.invert(labels)
