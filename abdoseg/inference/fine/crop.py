"""Crop geometry of the fine stage, on the canonical full-resolution grid (numpy only).

The crop is the bounding box of every organ voxel of the coarse labels, widened by a margin in mm on each
side (converted per axis with the voxel spacing, rounded up) and clipped to the scan; no organ → None (the
caller falls back to `CropBox.whole`). `paste` is the exact inverse of cropping: the crop goes back at the same
voxels, the rest is background.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from abdoseg.inference.card import Shape3, Spacing3


@dataclass(frozen=True)
class CropBox:
    """Voxels [start, stop) per axis (z, y, x) of a volume of shape `full_shape`."""

    start: Shape3
    stop: Shape3
    full_shape: Shape3

    def __post_init__(self) -> None:
        if not (len(self.start) == len(self.stop) == len(self.full_shape) == 3) or not all(
            0 <= a < b <= n for a, b, n in zip(self.start, self.stop, self.full_shape)
        ):
            raise ValueError(f"crop box needs 0 <= start < stop <= shape per axis, got {self}")

    @classmethod
    def whole(cls, shape: Shape3) -> "CropBox":
        return cls((0, 0, 0), tuple(int(n) for n in shape), tuple(int(n) for n in shape))  # type: ignore[arg-type]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @property
    def shape(self) -> Shape3:
        return tuple(b - a for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @property
    def is_whole(self) -> bool:
        return self.shape == tuple(self.full_shape)


def margin_voxels(spacing: Spacing3, margin_mm: float) -> Shape3:
    """Voxels per axis covering at least `margin_mm` (rounded up)."""
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive mm values, got {spacing!r}")
    if margin_mm < 0:
        raise ValueError(f"margin_mm must be >= 0, got {margin_mm!r}")
    return tuple(int(math.ceil(margin_mm / s - 1e-9)) for s in spacing)  # type: ignore[return-value]


def organ_box(labels: np.ndarray, spacing: Spacing3, margin_mm: float) -> CropBox | None:
    """Bounding box of the nonzero voxels of `labels` [z, y, x] plus `margin_mm`, clipped; no organ → None."""
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3D (z, y, x), got shape {labels.shape}")
    margin = margin_voxels(spacing, margin_mm)
    z = np.flatnonzero(labels.any(axis=(1, 2)))
    if z.size == 0:
        return None
    slab = labels[z[0] : z[-1] + 1]  # later passes read only the organ slab
    y = np.flatnonzero(slab.any(axis=(0, 2)))
    x = np.flatnonzero(slab.any(axis=(0, 1)))
    lo = [int(v[0]) for v in (z, y, x)]
    hi = [int(v[-1]) + 1 for v in (z, y, x)]
    return CropBox(
        start=tuple(max(0, a - m) for a, m in zip(lo, margin)),  # type: ignore[arg-type]
        stop=tuple(min(n, b + m) for b, m, n in zip(hi, margin, labels.shape)),  # type: ignore[arg-type]
        full_shape=tuple(labels.shape),  # type: ignore[arg-type]
    )


def paste(crop: np.ndarray, box: CropBox, fill: int = 0) -> np.ndarray:
    """A new `box.full_shape` array of `crop`'s dtype: `crop` at `box`, `fill` elsewhere."""
    if tuple(crop.shape) != box.shape:
        raise ValueError(f"crop shape {crop.shape} does not match the box shape {box.shape}")
    full = np.full(box.full_shape, fill, dtype=crop.dtype)
    full[box.slices] = crop
    return full
