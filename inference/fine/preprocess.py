"""The fine stage's preprocessing — the one definition that inference and training both call (imports torch).

Order: crop of the canonical HU volume → anti-aliased linear resample onto the fine grid → HU windows
(clip each to [level ± width/2], map to [0, 1]; one channel per window).

The fine grid covers exactly the crop's extent: n_fine = round(n · spacing / fine_spacing) voxels per axis
(at least 1), so its true spacing is within half a voxel of the card's over the crop. Resampling uses the
project's single convention, `inference.geometry.AxisMap` in resize mode (half-pixel centres, triangle
filter widened when shrinking, rows normalised), applied as three small dense matrices: in-plane per chunk
of slices as they are uploaded (so the full-resolution crop never sits on the device as float), then along z.
Labels for training use the same maps with nearest neighbour (`inference.geometry.downsample_labels`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from inference.card import Shape3, Spacing3, Window
from inference.geometry import AxisMap, downsample_labels


def fine_grid_shape(shape: Shape3, spacing: Spacing3, fine_spacing: Spacing3) -> Shape3:
    """Voxels per axis of the fine grid covering a crop of `shape` voxels at `spacing` mm."""
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"crop shape must be three positive sizes, got {shape!r}")
    if len(spacing) != 3 or min(spacing) <= 0 or len(fine_spacing) != 3 or min(fine_spacing) <= 0:
        raise ValueError(f"spacings must be three positive mm values, got {spacing!r} and {fine_spacing!r}")
    return tuple(max(1, int(round(n * s / f))) for n, s, f in zip(shape, spacing, fine_spacing))  # type: ignore[return-value]


def resize_maps(shape: Shape3, out_shape: Shape3) -> tuple[AxisMap, AxisMap, AxisMap]:
    """Resize-mode axis maps (step = n_in / n_out) from `shape` to `out_shape`."""
    return tuple(AxisMap(int(n), int(m), n / m) for n, m in zip(shape, out_shape))  # type: ignore[return-value]


def resample_volume(
    volume: np.ndarray, out_shape: Shape3, device: torch.device | str, chunk_slices: int = 16
) -> torch.Tensor:
    """Anti-aliased linear resample of a host volume [d, h, w] (any real dtype) → float32 [D, H, W] on `device`.

    Peak device memory: the output, one in-plane-resampled copy [d, H, W] and one chunk of `chunk_slices`
    input slices.
    """
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D (z, y, x), got shape {volume.shape}")
    if chunk_slices < 1:
        raise ValueError(f"chunk_slices must be >= 1, got {chunk_slices}")
    mz, my, mx = resize_maps(volume.shape, out_shape)  # type: ignore[arg-type]
    wz, wy, wx = (torch.from_numpy(m.weights()).to(device=device, dtype=torch.float32) for m in (mz, my, mx))
    d = volume.shape[0]
    inplane = torch.empty((d, out_shape[1], out_shape[2]), dtype=torch.float32, device=device)
    for z0 in range(0, d, chunk_slices):
        chunk = torch.from_numpy(np.ascontiguousarray(volume[z0 : z0 + chunk_slices])).to(device)
        inplane[z0 : z0 + chunk_slices] = wy @ chunk.to(torch.float32) @ wx.T  # [k,h,w] -> [k,H,W]
    return torch.tensordot(wz, inplane, dims=1)  # [D,h'..] = sum_z wz[D,z] inplane[z]


def apply_windows(hu: torch.Tensor, windows: Sequence[Window]) -> torch.Tensor:
    """HU [D, H, W] → [len(windows), D, H, W], each clipped to its window and mapped to [0, 1]."""
    return torch.stack([((hu - w.low) / w.width).clamp_(0.0, 1.0) for w in windows])


def prepare_image(
    crop: np.ndarray,
    spacing: Spacing3,
    fine_spacing: Spacing3,
    windows: Sequence[Window],
    device: torch.device | str,
) -> torch.Tensor:
    """Network input for a crop of the canonical HU volume: float32 [C, D, H, W] on the fine grid."""
    out_shape = fine_grid_shape(crop.shape, spacing, fine_spacing)  # type: ignore[arg-type]
    return apply_windows(resample_volume(crop, out_shape, device), windows)


def prepare_labels(labels: np.ndarray, spacing: Spacing3, fine_spacing: Spacing3) -> np.ndarray:
    """Training targets on the same fine grid as `prepare_image` (nearest neighbour, same voxel centres)."""
    out_shape = fine_grid_shape(labels.shape, spacing, fine_spacing)  # type: ignore[arg-type]
    return downsample_labels(labels, resize_maps(labels.shape, out_shape))  # type: ignore[arg-type]
