"""Sliding-window inference with Gaussian importance weighting, as nnU-Net (imports torch).

Windows start at evenly spread positions at most `step`·patch apart, the last flush with the far edge
(nnU-Net's `compute_steps_for_sliding_window`). Each window's logits are weighted by a Gaussian centred on the
patch (σ = patch/8 per axis, peak 1, floored at its smallest positive value so no voxel gets zero weight)
and the weighted sum is divided by the summed weights. A volume smaller than the patch is padded with zeros
(air after the HU windows) on both sides and the padding removed afterwards.
"""
from __future__ import annotations

import itertools
import math
from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn.functional as F

from abdoseg.inference.card import Shape3

Network = Callable[[torch.Tensor], torch.Tensor]


def window_starts(size: int, patch: int, step: float) -> list[int]:
    """Start indices of windows of `patch` voxels covering [0, size) (size >= patch), spaced <= step·patch."""
    if size < patch or patch < 1 or not 0 < step <= 1:
        raise ValueError(f"need size >= patch >= 1 and 0 < step <= 1, got size={size} patch={patch} step={step}")
    n = int(math.ceil((size - patch) / (patch * step))) + 1
    if n == 1:
        return [0]
    return [int(round(i * (size - patch) / (n - 1))) for i in range(n)]


def gaussian_importance(patch: Shape3, device: torch.device | str, sigma_scale: float = 1.0 / 8) -> torch.Tensor:
    """Float32 [pz, py, px]: product of per-axis Gaussians centred at patch//2, σ = patch·sigma_scale, peak 1."""
    axes = []
    for n in patch:
        k = torch.arange(n, dtype=torch.float64, device=device)
        axes.append(torch.exp(-0.5 * ((k - n // 2) / (n * sigma_scale)) ** 2))
    g = (axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]).to(torch.float32)
    g = g / g.max()
    positive = g[g > 0]
    return torch.where(g > 0, g, positive.min()) if positive.numel() < g.numel() else g


def sliding_window_logits(
    network: Network,
    image: torch.Tensor,
    patch: Shape3,
    n_classes: int,
    step: float = 0.5,
    fp16: bool = False,
) -> tuple[torch.Tensor, int]:
    """Logits float32 [n_classes, D, H, W] for `image` [C, D, H, W]; also the number of windows run.

    `fp16`: run the network under CUDA fp16 autocast (accumulation stays float32).
    """
    if image.ndim != 4:
        raise ValueError(f"image must be [C, D, H, W], got shape {tuple(image.shape)}")
    size = tuple(image.shape[1:])
    padded = tuple(max(s, p) for s, p in zip(size, patch))
    before = tuple((p - s) // 2 for s, p in zip(size, padded))
    if padded != size:
        pad = []
        for s, p, b in reversed(list(zip(size, padded, before))):  # F.pad wants the last axis first
            pad += [b, p - s - b]
        image = F.pad(image, pad)
    gauss = gaussian_importance(patch, image.device)
    logits = torch.zeros((n_classes, *padded), dtype=torch.float32, device=image.device)
    weight = torch.zeros(padded, dtype=torch.float32, device=image.device)
    starts = [window_starts(s, p, step) for s, p in zip(padded, patch)]
    autocast = torch.autocast("cuda", dtype=torch.float16) if fp16 else nullcontext()
    count = 0
    for z, y, x in itertools.product(*starts):
        region = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
        with autocast:
            out = network(image[(None, slice(None), *region)])
        logits[(slice(None), *region)] += out[0].float() * gauss
        weight[region] += gauss
        count += 1
    logits /= weight
    crop = tuple(slice(b, b + s) for b, s in zip(before, size))
    return logits[(slice(None), *crop)], count
