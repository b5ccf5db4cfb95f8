"""The fine grid of a crop, and the crop's resample onto it in numpy (no torch): the torch-free fine stage's half of
the one preprocessing definition (abdoseg.inference.fine.preprocess is the torch half; both use these maps).

The fine grid covers exactly the crop's extent: n_fine = round(n · spacing / fine_spacing) voxels per axis (at least
1). Resampling is the project's single convention, `abdoseg.inference.grid.geometry.AxisMap` in resize mode
(half-pixel centres, triangle filter widened when shrinking, rows normalised), as three small dense matrices.
"""
from __future__ import annotations

import numpy as np

from abdoseg.inference.card import Shape3, Spacing3
from abdoseg.inference.grid.geometry import AxisMap


def fine_grid_shape(shape: Shape3, spacing: Spacing3, fine_spacing: Spacing3) -> Shape3:
    """Voxels per axis of the fine grid covering a crop of `shape` voxels at `spacing` mm."""
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"crop shape must be three positive sizes, got {shape!r}")
    if len(spacing) != 3 or min(spacing) <= 0 or len(fine_spacing) != 3 or min(fine_spacing) <= 0:
        raise ValueError(f"spacings must be three positive mm values, got {spacing!r} and {fine_spacing!r}")
    sizes = (max(1, int(round(n * s / f))) for n, s, f in zip(shape, spacing, fine_spacing))
    return tuple(sizes)  # type: ignore[return-value]


def resize_maps(shape: Shape3, out_shape: Shape3) -> tuple[AxisMap, AxisMap, AxisMap]:
    """Resize-mode axis maps (step = n_in / n_out) from `shape` to `out_shape`."""
    return tuple(AxisMap(int(n), int(m), n / m) for n, m in zip(shape, out_shape))  # type: ignore[return-value]


def grid_spacing(shape: Shape3, spacing: Spacing3, out_shape: Shape3) -> Spacing3:
    """The true voxel spacing (mm) of `out_shape` voxels covering a crop of `shape` voxels at `spacing`."""
    return tuple(n * s / m for n, s, m in zip(shape, spacing, out_shape))  # type: ignore[return-value]


def resample_numpy(volume: np.ndarray, out_shape: Shape3, chunk_slices: int = 32) -> np.ndarray:
    """Anti-aliased linear resample of `volume` [d, h, w] (any real dtype) → float32 [D, H, W], in-plane then along
    z; in-plane a group of slices at a time, so no float copy of the whole crop is made."""
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D (z, y, x), got shape {volume.shape}")
    maps = resize_maps(volume.shape, out_shape)  # type: ignore[arg-type]
    wz, wy, wx = (m.weights().astype(np.float32) for m in maps)
    wx_t = np.ascontiguousarray(wx.T)
    d, h, w = volume.shape
    plane = np.empty((d, wy.shape[0], wx.shape[0]), np.float32)
    for z0 in range(0, d, chunk_slices):  # plain 2D GEMMs: numpy's stacked matmul may not reach BLAS
        band = volume[z0:z0 + chunk_slices].astype(np.float32)
        along_x = (band.reshape(-1, w) @ wx_t).reshape(len(band), h, -1)
        for k in range(len(band)):
            np.matmul(wy, along_x[k], out=plane[z0 + k])
    return (wz @ plane.reshape(d, -1)).reshape(wz.shape[0], *plane.shape[1:])
