"""Weighted multi-class soft Dice (+ optional cross-entropy) and the class weights it uses."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def class_weights_from_counts(counts: np.ndarray, power: float = 0.25) -> np.ndarray:
    """Weights ∝ frequency^-power over the classes present, normalised to sum 1 (absent classes get 0).

    ``counts``: voxel count per class. With ``power=0.25`` a class 10,000× rarer weighs 10× more.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or np.any(counts < 0) or counts.sum() <= 0:
        raise ValueError(f"class counts must be a non-negative 1-D array with a positive sum, got {counts!r}")
    freq = counts / counts.sum()
    weights = np.where(freq > 0, np.power(np.maximum(freq, 1e-12), -power), 0.0)
    return weights / weights.sum()


def soft_dice_per_class(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice of each class over the whole batch. ``logits`` [N, C, ...], ``target`` [N, ...] int → [C]."""
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target.long(), probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    dims = (0,) + tuple(range(2, probs.ndim))
    intersection = (probs * onehot).sum(dims)
    denominator = probs.sum(dims) + onehot.sum(dims)
    return (2.0 * intersection + eps) / (denominator + eps)


class DiceCELoss(torch.nn.Module):
    """``1 − Σ_c w_c · softDice_c`` plus ``ce_weight ×`` cross-entropy (0 disables it)."""

    def __init__(self, class_weights: np.ndarray, ce_weight: float = 1.0) -> None:
        super().__init__()
        weights = torch.as_tensor(np.asarray(class_weights), dtype=torch.float32)
        if weights.ndim != 1 or not torch.isclose(weights.sum(), torch.tensor(1.0), atol=1e-4):
            raise ValueError(f"class_weights must be 1-D and sum to 1, got {class_weights!r}")
        if ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}")
        self.register_buffer("class_weights", weights)
        self.ce_weight = ce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = soft_dice_per_class(logits, target)
        loss = 1.0 - (self.class_weights * dice).sum()
        if self.ce_weight > 0:
            loss = loss + self.ce_weight * F.cross_entropy(logits.float(), target.long())
        return loss
