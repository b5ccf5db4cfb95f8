"""Torch twin of the HU-window step of inference/preprocess_graph.py (tested equal within 1e-4)."""
from __future__ import annotations

import torch

from inference.card import COBRA_WINDOWS, Window


def hu_to_channels(hu: torch.Tensor, windows: tuple[Window, ...] = COBRA_WINDOWS) -> torch.Tensor:
    """HU [..., D, H, W] -> [..., C, D, H, W]: each window clipped to [level ± width/2] and mapped to [0, 1]."""
    return torch.stack([((hu - w.low) / w.width).clamp(0.0, 1.0) for w in windows], dim=-4)
