"""Sliding-window inference over any runner (ONNX Runtime, OpenVINO), in numpy, as nnU-Net places and weights windows.

Networks with instance normalisation compute statistics per window, so a window's extent is part of the model: a
whole-volume forward is a different model. This module reproduces nnU-Net's (`nnunetv2.inference.sliding_window_
prediction`): windows start at evenly spread positions at most `step`·patch apart, the last flush with the far
edge (`compute_steps_for_sliding_window`); each window's logits are weighted by a Gaussian centred on the patch
(σ = patch·sigma_scale per axis, truncated at 4σ as scipy's `gaussian_filter` of a centred delta, peak 1, zeros
raised to the smallest positive weight so that no voxel has zero weight); the weighted sum is divided by the summed
weights. An image smaller than the patch is padded with `pad_value` on both sides (nnU-Net pads the normalised
image with 0) and the padding removed afterwards. Works for 2-D and 3-D patches alike.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

# run(batch [B, C, *patch]) -> logits [B, n_classes, *patch]
Runner = Callable[[np.ndarray], np.ndarray]


def window_starts(size: int, patch: int, step: float) -> list[int]:
    """Start indices of windows of `patch` voxels covering [0, size) (size >= patch), spaced <= step·patch."""
    if size < patch or patch < 1 or not 0 < step <= 1:
        raise ValueError(f"need size >= patch >= 1 and 0 < step <= 1, got size={size} patch={patch} step={step}")
    n = math.ceil((size - patch) / (patch * step)) + 1
    if n == 1:
        return [0]
    return [round(i * (size - patch) / (n - 1)) for i in range(n)]


def gaussian_importance(patch: Sequence[int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """Float32 array of shape `patch`: product of per-axis Gaussians centred at n//2, σ = n·sigma_scale, peak 1,
    zero beyond scipy's truncation radius int(4σ + 0.5) and those zeros raised to the smallest positive value."""
    weights = np.ones((), dtype=np.float64)
    for n in patch:
        sigma = n * sigma_scale
        offset = np.arange(n, dtype=np.float64) - n // 2
        axis = np.exp(-0.5 * (offset / sigma) ** 2)
        axis[np.abs(offset) > int(4.0 * sigma + 0.5)] = 0.0
        weights = np.multiply.outer(weights, axis)
    weights = (weights / weights.max()).astype(np.float32)
    positive = weights > 0
    if not positive.all():
        weights[~positive] = weights[positive].min()
    return weights


def pad_to_patch(image: np.ndarray, patch: Sequence[int], pad_value: float = 0.0) -> tuple[np.ndarray, tuple[slice, ...]]:
    """`image` [C, *spatial] padded symmetrically to at least `patch`; also the slices that undo the padding."""
    size = image.shape[1:]
    padded = [max(s, p) for s, p in zip(size, patch)]
    before = [(p - s) // 2 for s, p in zip(size, padded)]
    crop = tuple(slice(b, b + s) for b, s in zip(before, size))
    if list(size) == padded:
        return image, crop
    widths = [(0, 0)] + [(b, p - s - b) for s, p, b in zip(size, padded, before)]
    return np.pad(image, widths, mode="constant", constant_values=pad_value), crop


def sliding_window_logits(
    run: Runner,
    image: np.ndarray,
    patch: Sequence[int],
    n_classes: int,
    step: float = 0.5,
    sigma_scale: float = 1.0 / 8,
    batch: int = 1,
    pad_value: float = 0.0,
) -> tuple[np.ndarray, int]:
    """Logits float32 [n_classes, *spatial] for `image` [C, *spatial]; also the number of windows run.

    `batch` windows go through `run` at once (the last batch may be smaller)."""
    if image.ndim != len(patch) + 1:
        raise ValueError(f"image must be [C, *spatial] with {len(patch)} spatial axes, got shape {image.shape}")
    padded, crop = pad_to_patch(np.asarray(image, dtype=np.float32), patch, pad_value)
    gauss = gaussian_importance(patch, sigma_scale)
    logits = np.zeros((n_classes, *padded.shape[1:]), dtype=np.float32)
    weight = np.zeros(padded.shape[1:], dtype=np.float32)
    starts = [window_starts(s, p, step) for s, p in zip(padded.shape[1:], patch)]
    regions = [tuple(slice(a, a + p) for a, p in zip(corner, patch)) for corner in itertools.product(*starts)]
    for first in range(0, len(regions), batch):
        chunk = regions[first:first + batch]
        out = np.asarray(run(np.stack([padded[(slice(None), *r)] for r in chunk])), dtype=np.float32)
        if out.shape != (len(chunk), n_classes, *patch):
            raise ValueError(f"runner returned shape {out.shape}, expected {(len(chunk), n_classes, *patch)}")
        for region, window in zip(chunk, out):
            logits[(slice(None), *region)] += window * gauss
            weight[region] += gauss
    logits /= weight
    return logits[(slice(None), *crop)], len(regions)
