"""Torch twin of the HU-window step of abdoseg/inference/graph/preprocess_graph.py (tested equal within 1e-4).

The window arithmetic itself is abdoseg.inference.fine.preprocess.apply_windows (the fine stage's, on the GPU path);
this module gives it the coarse model's default windows.
"""
from __future__ import annotations

import torch

from abdoseg.inference.card import COBRA_WINDOWS, Window
from abdoseg.inference.fine.preprocess import apply_windows


def hu_to_channels(hu: torch.Tensor, windows: tuple[Window, ...] = COBRA_WINDOWS) -> torch.Tensor:
    """HU [..., D, H, W] -> [..., C, D, H, W]: each window clipped to [level ± width/2] and mapped to [0, 1]."""
    return apply_windows(hu, windows)
