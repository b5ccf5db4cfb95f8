"""One nnU-Net configuration, run as nnunetv2's nnUNetPredictor runs it, on a scan's array as stored.

The stages, in nnU-Net's order (default_preprocessor.run_case, then export_prediction):
    transpose   the array (and spacing) by the plans' transpose_forward
    crop        to the bounding box of the non-zero voxels (nnU-Net's crop_to_nonzero: filling holes in the mask
                does not move its box, so the box is taken from the non-zero voxels directly)
    normalise   CTNormalization per channel, on the cropped original grid
    resample    to the configuration's spacing (order 3; anisotropic: in-plane, then order_z along the coarse axis)
    [cascade]   the coarse stage's labels, resampled as nnU-Net's seg (order 1 per label), one-hot, as extra channels
    windows     the folds' sliding windows (abdoseg.inference.nnunet.windows)
    labels      arg-max of the scores resampled to the cropped grid (abdoseg.inference.nnunet.resample: exact in a band)
    paste       into the uncropped grid, transposed back
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from collections.abc import Sequence

import numpy as np

from abdoseg.inference.nnunet.card import NnunetCard, Resampling
from abdoseg.inference.nnunet.resample import (AxisTaps, compute_new_shape, labels_from_scores, resample_data,
                                               score_taps)
from abdoseg.inference.nnunet.windows import FoldEnsemble, logits_2d, logits_3d

SLICE_BATCH = 8  # 2d configuration: slices per network run
#: nnU-Net's default resampling_fn_seg (plans: is_seg, order 1, order_z 0), for cards without a "seg" entry.
DEFAULT_SEG_RESAMPLING = Resampling("resample_data_or_seg_to_shape", {"is_seg": True, "order": 1, "order_z": 0,
                                                                     "force_separate_z": None})


@dataclass
class Timings:
    """Seconds per step (`lap`, as the pipeline's StageClock, which may stand in for it) and figures (`details`)."""

    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)
    _t: float = field(default_factory=time.perf_counter)

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + now - self._t
        self._t = now


def nonzero_box(data: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of the voxels non-zero in any channel of `data` [C, *spatial] (all of it when none is)."""
    mask = np.any(data != 0, axis=0) if data.shape[0] > 1 else data[0] != 0
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1) if hit.size else slice(0, mask.shape[axis]))
    return tuple(box)


def normalise(data: np.ndarray, card: NnunetCard) -> np.ndarray:
    """CTNormalization of each image channel: float32 [C, *spatial] (a new array; `data` is not changed)."""
    out = np.empty(data.shape, np.float32)
    for c, norm in enumerate(card.normalization):
        np.clip(data[c], norm.lower, norm.upper, out=out[c], casting="unsafe")
        out[c] -= norm.mean
        out[c] /= max(norm.std, 1e-8)
    return out


def target_spacing(card: NnunetCard, spacing: Sequence[float]) -> tuple[float, ...]:
    """The network grid's spacing: the card's; a 2d card keeps the scan's spacing between slices (axis 0)."""
    return (spacing[0], *card.spacing) if card.configuration == "2d" else tuple(card.spacing)


def one_hot_prior(labels: np.ndarray, new_shape: Sequence[int], spacing: Sequence[float],
                  new_spacing: Sequence[float], card: NnunetCard) -> np.ndarray:
    """float32 [n_classes - 1, *new_shape]: a cascade's coarse labels (cropped, transposed) resampled as nnU-Net's
    resampling_fn_seg (batchgenerators' resize_segmentation: each label's indicator resized, the per-voxel arg-max,
    exact ties to the nearest neighbour's label when it is one of them, else the smallest), one-hot per
    foreground label."""
    rule = card.resampling.get("seg") or DEFAULT_SEG_RESAMPLING
    new_shape = tuple(int(n) for n in new_shape)
    nearest = labels[np.ix_(*(AxisTaps.of(n, m, 0).low for n, m in zip(labels.shape, new_shape)))]
    best = seg = tied = nearest_best = None
    for k in np.unique(labels):
        score = resample_data((labels == k).astype(np.float32)[None], new_shape, spacing, new_spacing, rule)[0]
        hit = nearest == k
        if best is None:
            best, seg = score, np.full(new_shape, k, np.uint8)
            tied, nearest_best = np.zeros(new_shape, bool), hit
            continue
        above, equal = score > best, score == best
        seg[above] = k
        tied = (tied & ~above) | equal
        nearest_best = np.where(above, hit, nearest_best | (equal & hit))
        best = np.maximum(best, score)
    settle = tied & nearest_best
    seg[settle] = nearest[settle]
    return np.stack([seg == k for k in range(1, card.n_classes)]).astype(np.float32)


class NnunetModel:
    """Predict label maps for one configuration's card with its fold sessions (`FoldEnsemble`)."""

    def __init__(self, card: NnunetCard, ensemble: FoldEnsemble) -> None:
        self.card = card
        self.ensemble = ensemble

    def predict(self, image: np.ndarray, spacing: Sequence[float], prior: np.ndarray | None = None,
                clock: Timings | None = None, stage: str = "") -> np.ndarray:
        """uint8 labels [z, y, x] for `image` [C, z, y, x] or [z, y, x] (as stored; any dtype) of `spacing` (z, y, x).

        `prior`: a cascade's coarse labels on the same grid. `clock` gets a lap per step, named after `stage`."""
        card, timings = self.card, _Prefixed(clock or Timings(), stage)
        data = image[None] if image.ndim == 3 else image
        forward = list(card.transpose_forward)
        data = data.transpose([0, *[a + 1 for a in forward]])
        spacing_t = [float(spacing[a]) for a in forward]
        box = nonzero_box(data)
        data = normalise(data[(slice(None), *box)], card)
        new_spacing = target_spacing(card, spacing_t)
        new_shape = compute_new_shape(data.shape[1:], spacing_t, new_spacing)
        data = resample_data(data, new_shape, spacing_t, new_spacing, card.resampling["data"])
        if prior is not None:
            prior_t = prior.transpose(forward)[box]
            data = np.concatenate([data, one_hot_prior(prior_t, new_shape, spacing_t, new_spacing, card)])
        timings.lap("preprocess")
        scores = self._scores(data, timings)
        timings.lap("network")
        cropped_shape = tuple(s.stop - s.start for s in box)
        taps = score_taps(scores.shape[1:], cropped_shape, new_spacing, spacing_t, card.resampling["probabilities"])
        labels = np.zeros(image.shape[-3:] if image.ndim == 4 else image.shape, np.uint8).transpose(forward)
        labels[box] = labels_from_scores(scores, cropped_shape, taps)
        timings.lap("export")
        return np.ascontiguousarray(labels.transpose(np.argsort(forward)))

    def _scores(self, data: np.ndarray, timings: _Prefixed) -> np.ndarray:
        card = self.card
        if card.configuration == "2d":
            scores, n = logits_2d(self.ensemble, data, card.patch_size, card.n_classes, card.step, card.sigma_scale,
                                  SLICE_BATCH)
        else:
            scores, n = logits_3d(self.ensemble, data, card.patch_size, card.n_classes, card.step, card.sigma_scale)
        runs, self.ensemble.runs = self.ensemble.runs, 0
        timings.detail({"windows": n, "network_runs": runs, "network_grid": list(data.shape[1:])})
        return scores


@dataclass
class _Prefixed:
    """A clock whose laps and details are named after one stage (a cascade's "coarse" and fine models)."""

    clock: Timings
    stage: str

    def lap(self, step: str) -> None:
        self.clock.lap(f"{self.stage} {step}" if self.stage else step)

    def detail(self, figures: dict) -> None:
        self.clock.details[f"nnunet {self.stage}".strip()] = figures
