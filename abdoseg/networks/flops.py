"""Compute cost of one forward, counted by torch's FlopCounterMode on meta tensors (no arithmetic runs).

FlopCounterMode counts convolutions (transposed included), matmuls and linear layers as 2 FLOPs per
multiply-add. The papers' figures (fvcore) count one per multiply-add, so `gmacs` is the comparable column;
normalisation, activations, pooling and interpolation are not counted (fvcore adds a few ‰ for them).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from abdoseg.networks.registry import ArchSpec, build


def forward_flops(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """FLOPs (2 per multiply-add) of `model` on one input of `shape` [N, C, ...] in eval mode."""
    model = model.to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(shape, device="meta"))
    return int(counter.get_total_flops())


def spec_gmacs(spec: ArchSpec, width: float = 1.0) -> float:
    """Billions of multiply-adds for one input of the architecture's sample geometry at the paper's classes."""
    with torch.device("meta"):
        model = build(spec.name, width=width)
    return forward_flops(model, (1, spec.in_channels, *spec.sample)) / 2e9
