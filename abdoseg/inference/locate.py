"""The locate stage: find the z-range of a long scan that holds the abdominal organs, before segmenting it.

A scan longer than the card's `locator.skip_below_mm` (by default the segmentation canvas's z extent) is
summarised on a coarse grid — one axial slice every `spacing[0]` mm (nearest slice), each sampled at
`spacing[1:]` mm on a fixed `shape_yx` canvas centred on the scan (nearest pixel), mapped through the locator's
HU windows — and a tiny network (ONNX, described by the card's `locator` section) gives each coarse slice the
probability that it cuts an organ. The best run of slices above `threshold`, widened by `margin_mm`, is the
located region; the segmentation canvas is then placed on it (see `segment_window`).

`locator_input` is the one preprocessing definition: training (abdoseg.training.locator) builds its inputs with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from abdoseg.inference.card import LocatorSpec

Spacing3 = tuple[float, float, float]


@dataclass(frozen=True)
class ZRange:
    """Canonical slices [start, stop) of a scan (z index grows toward the head), with the scan's z spacing."""

    start: int
    stop: int
    spacing_z: float

    @property
    def mm(self) -> tuple[float, float]:
        """The range's extent in mm from the scan's inferior edge."""
        return round(self.start * self.spacing_z, 1), round(self.stop * self.spacing_z, 1)

    @property
    def empty(self) -> bool:
        return self.stop <= self.start

    def as_dict(self) -> dict[str, list[float] | list[int]]:
        return {"slices": [self.start, self.stop], "mm": list(self.mm)}


def coarse_slices(n_z: int, spacing_z: float, step_mm: float) -> np.ndarray:
    """For each coarse slice (one every `step_mm` from the inferior edge), the nearest canonical slice index."""
    n_out = max(1, int(round(n_z * spacing_z / step_mm)))
    centres_mm = (np.arange(n_out) + 0.5) * (n_z * spacing_z / n_out)
    return np.clip(np.floor(centres_mm / spacing_z), 0, n_z - 1).astype(np.intp)


def _inplane_index(n_in: int, spacing_in: float, n_out: int, spacing_out: float, shift: float = 0.0) -> np.ndarray:
    """Nearest input index of each output pixel of a centred canvas (-1 off the scan); `shift` in output pixels."""
    centres = (np.arange(n_out) - (n_out - 1) / 2 + shift) * spacing_out / spacing_in + (n_in - 1) / 2
    index = np.floor(centres + 0.5)
    return np.where((index >= 0) & (index < n_in), index, -1).astype(np.intp)


def locator_input(ct: np.ndarray, spacing: Spacing3, spec: LocatorSpec,
                  shift_yx: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The locator's input [1, C, Z', Y', X'] float32 from a canonical int16 HU scan (z, y, x).

    Only the coarse slices' sampled pixels are read (a few hundred thousand voxels whatever the scan size).
    `shift_yx` (output pixels) moves the in-plane canvas: training uses it for augmentation.
    """
    z = coarse_slices(ct.shape[0], spacing[0], spec.spacing[0])
    yx = [_inplane_index(ct.shape[a], spacing[a], spec.shape_yx[a - 1], spec.spacing[a], shift_yx[a - 1]) for a in (1, 2)]
    hu = ct[z][:, np.maximum(yx[0], 0)][:, :, np.maximum(yx[1], 0)].astype(np.float32)
    off = (yx[0] < 0)[None, :, None] | (yx[1] < 0)[None, None, :]
    hu[np.broadcast_to(off, hu.shape)] = spec.pad_hu
    channels = [np.clip((hu - w.low) / w.width, 0.0, 1.0) for w in spec.windows]
    return np.stack(channels)[None].astype(np.float32)


def region_from_probabilities(prob: np.ndarray, n_z: int, spacing_z: float, spec: LocatorSpec) -> ZRange:
    """The located range of canonical slices: the run of coarse slices above threshold with the largest summed
    probability (gaps of one coarse slice bridged), widened by the margin; empty when no slice passes."""
    above = np.asarray(prob, dtype=float) >= spec.threshold
    if not above.any():
        return ZRange(0, 0, spacing_z)
    idx = np.flatnonzero(above)
    runs = np.split(idx, np.flatnonzero(np.diff(idx) > 2) + 1)  # bridge single-slice gaps
    best = max(runs, key=lambda r: float(np.sum(prob[r[0]:r[-1] + 1])))
    step = n_z * spacing_z / len(prob)  # mm per coarse slice
    lo_mm = best[0] * step - spec.margin_mm
    hi_mm = (best[-1] + 1) * step + spec.margin_mm
    start = max(0, int(math.floor(lo_mm / spacing_z)))
    stop = min(n_z, int(math.ceil(hi_mm / spacing_z)))
    return ZRange(start, stop, spacing_z)


def segment_window(region: ZRange, n_z: int, length_mm: float) -> ZRange:
    """The slices the segmentation canvas sees: `length_mm` (at least the region) centred on the region,
    shifted to stay inside the scan. A canvas fed exactly these slices is centred on them (geometry.py)."""
    length = max(region.stop - region.start, int(math.ceil(length_mm / region.spacing_z - 1e-6)))
    length = min(length, n_z)
    centre = (region.start + region.stop) / 2
    start = int(round(centre - length / 2))
    start = min(max(start, 0), n_z - length)
    return ZRange(start, start + length, region.spacing_z)
