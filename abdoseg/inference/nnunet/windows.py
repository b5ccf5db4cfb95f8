"""The network part of an nnU-Net prediction: sliding windows over the folds, with nnU-Net's mirroring.

nnU-Net runs the whole sliding window once per fold and averages the folds' logits; the windows' weighted sum is
linear, so averaging the folds window by window (one accumulator) gives the same logits. With mirroring (`--tta`)
each window's logits are the mean over the unmirrored input and every non-empty combination of the card's mirror
axes, each prediction flipped back (nnunetv2 `_internal_maybe_mirror_and_predict`). 3D configurations slide a 3D
patch; the 2d configuration slides its 2D patch over every slice, a batch of slices per network run.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from abdoseg.inference.graph.runtime import Session
from abdoseg.inference.sliding import Runner, gaussian_importance, pad_to_patch, sliding_window_logits, window_starts

INPUT, OUTPUT = "image", "logits"  # the imported ONNX files' names (docs/nnunet.md)


class FoldEnsemble:
    """run(batch [B, C, *patch]) -> logits [B, n_classes, *patch], averaged over the folds (and mirrorings)."""

    def __init__(self, sessions: Sequence[Session], mirror_axes: Sequence[int] = ()) -> None:
        if not sessions:
            raise ValueError("a fold ensemble needs at least one session")
        self.sessions = list(sessions)
        axes = [a + 2 for a in mirror_axes]
        self.flips: list[tuple[int, ...]] = [()] + [c for n in range(1, len(axes) + 1)
                                                    for c in itertools.combinations(axes, n)]
        self.runs = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        total: np.ndarray | None = None
        for session in self.sessions:
            for axes in self.flips:
                x = np.ascontiguousarray(np.flip(batch, axes)) if axes else batch
                y = np.asarray(session.run({INPUT: x}), dtype=np.float32)
                y = np.flip(y, axes) if axes else y
                total = y.copy() if total is None else np.add(total, y, out=total)
                self.runs += 1
        total /= len(self.sessions) * len(self.flips)
        return total


def logits_3d(run: Runner, image: np.ndarray, patch: Sequence[int], n_classes: int, step: float,
              sigma_scale: float) -> tuple[np.ndarray, int]:
    """Logits [n_classes, z, y, x] of `image` [C, z, y, x]: nnU-Net's 3D sliding window, one window a run."""
    return sliding_window_logits(run, image, patch, n_classes, step, sigma_scale, batch=1)


def logits_2d(run: Runner, image: np.ndarray, patch: Sequence[int], n_classes: int, step: float,
              sigma_scale: float, batch: int) -> tuple[np.ndarray, int]:
    """Logits [n_classes, z, y, x] of `image` [C, z, y, x] for a 2D network: every slice alone, as nnU-Net slides
    a 2D patch over each slice; `batch` slices a run (the last batch padded with zero slices, so that a runtime
    compiled for one shape keeps it). Returns the logits and the number of windows run (slices x positions)."""
    n_slices = image.shape[1]
    padded, crop = pad_to_patch(np.asarray(image, np.float32), (n_slices, *patch))
    gauss = gaussian_importance(patch, sigma_scale)
    size = padded.shape[2:]
    logits = np.zeros((n_classes, n_slices, *size), np.float32)
    weight = np.zeros(size, np.float32)
    starts = [window_starts(s, p, step) for s, p in zip(size, patch)]
    for y0, x0 in itertools.product(*starts):
        region = (slice(y0, y0 + patch[0]), slice(x0, x0 + patch[1]))
        weight[region] += gauss
        for z0 in range(0, n_slices, batch):
            chunk = np.moveaxis(padded[(slice(None), slice(z0, z0 + batch), *region)], 1, 0)
            if chunk.shape[0] < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - chunk.shape[0], *chunk.shape[1:]), np.float32)])
            out = np.asarray(run(np.ascontiguousarray(chunk)), np.float32)[:min(batch, n_slices - z0)]
            logits[(slice(None), slice(z0, z0 + out.shape[0]), *region)] += np.moveaxis(out, 0, 1) * gauss
    logits /= weight
    n_windows = n_slices * len(starts[0]) * len(starts[1])
    return logits[(slice(None), slice(None), *crop[1:])], n_windows
