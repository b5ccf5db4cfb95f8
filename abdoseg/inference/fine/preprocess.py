"""The fine stage's preprocessing — the one definition that inference and training both call (imports torch).

Order: crop of the canonical HU volume → anti-aliased linear resample onto the fine grid → HU windows
(clip each to [level ± width/2], map to [0, 1]; or, with the card's `global_intensity` (mean, std), clip and
standardise by those training statistics; one channel per window).

The fine grid covers exactly the crop's extent: n_fine = round(n · spacing / fine_spacing) voxels per axis
(at least 1), so its true spacing is within half a voxel of the card's over the crop. Resampling uses the
project's single convention, `abdoseg.inference.grid.geometry.AxisMap` in resize mode (half-pixel centres, triangle
filter widened when shrinking, rows normalised), applied as three small dense matrices, a group of output
slices at a time: only the band of input slices the group needs is uploaded and resampled in-plane, so the
full-resolution crop never sits on the device whole.
Labels for training use the same maps with nearest neighbour (`abdoseg.inference.grid.geometry.downsample_labels`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from abdoseg.inference.card import Shape3, Spacing3, Window
from abdoseg.inference.fine.grid import fine_grid_shape, resize_maps
from abdoseg.inference.grid.geometry import downsample_labels


def resample_volume(
    volume: np.ndarray, out_shape: Shape3, device: torch.device | str, chunk_slices: int = 16
) -> torch.Tensor:
    """Anti-aliased linear resample of a host volume [d, h, w] (any real dtype) → float32 [D, H, W] on `device`.

    Output slices are made a group at a time from the band of input slices their z-weights touch, uploaded
    and resampled in-plane just then: device memory is the output plus about `chunk_slices` input slices,
    whatever the scan's length.
    """
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D (z, y, x), got shape {volume.shape}")
    if chunk_slices < 1:
        raise ValueError(f"chunk_slices must be >= 1, got {chunk_slices}")
    mz, my, mx = resize_maps(volume.shape, out_shape)  # type: ignore[arg-type]
    wz = mz.weights()
    wy, wx = (torch.from_numpy(m.weights()).to(device=device, dtype=torch.float32) for m in (my, mx))
    out = torch.empty(tuple(int(n) for n in out_shape), dtype=torch.float32, device=device)
    group = max(1, int(chunk_slices // max(1.0, mz.step)))  # output slices whose band is ~chunk_slices inputs
    for o0 in range(0, out.shape[0], group):
        rows = wz[o0 : o0 + group]
        used = np.flatnonzero(rows.any(axis=0))
        lo, hi = int(used[0]), int(used[-1]) + 1
        band = torch.from_numpy(np.ascontiguousarray(volume[lo:hi])).to(device).to(torch.float32)
        inplane = wy @ band @ wx.T  # [k, h, w] -> [k, H, W]
        mix = torch.from_numpy(rows[:, lo:hi]).to(device=device, dtype=torch.float32)
        out[o0 : o0 + group] = torch.tensordot(mix, inplane, dims=1)
    return out


def apply_windows(hu: torch.Tensor, windows: Sequence[Window]) -> torch.Tensor:
    """HU [..., D, H, W] → [..., len(windows), D, H, W], each clipped to its window and mapped to [0, 1].

    The torch form of the graph's window step (abdoseg/inference/graph/preprocess_graph.py); training uses it too."""
    return torch.stack([((hu - w.low) / w.width).clamp_(0.0, 1.0) for w in windows], dim=-4)


def standardise_windows(hu: torch.Tensor, windows: Sequence[Window], mean: float, std: float) -> torch.Tensor:
    """HU [..., D, H, W] → [..., len(windows), D, H, W]: each window's clip, then (HU - mean) / std (global
    statistics, seed 001's fine-model normalisation)."""
    return torch.stack([(hu.clamp(w.low, w.high) - mean) / std for w in windows], dim=-4)


def prepare_image(
    crop: np.ndarray,
    spacing: Spacing3,
    fine_spacing: Spacing3,
    windows: Sequence[Window],
    device: torch.device | str,
    global_intensity: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Network input for a crop of the canonical HU volume: float32 [C, D, H, W] on the fine grid; windows
    mapped to [0, 1], or standardised by `global_intensity` (mean, std) when the card has it."""
    out_shape = fine_grid_shape(crop.shape, spacing, fine_spacing)  # type: ignore[arg-type]
    hu = resample_volume(crop, out_shape, device)
    if global_intensity is None:
        return apply_windows(hu, windows)
    return standardise_windows(hu, windows, *global_intensity)


def prepare_labels(labels: np.ndarray, spacing: Spacing3, fine_spacing: Spacing3) -> np.ndarray:
    """Training targets on the same fine grid as `prepare_image` (nearest neighbour, same voxel centres)."""
    out_shape = fine_grid_shape(labels.shape, spacing, fine_spacing)  # type: ignore[arg-type]
    return downsample_labels(labels, resize_maps(labels.shape, out_shape))  # type: ignore[arg-type]
