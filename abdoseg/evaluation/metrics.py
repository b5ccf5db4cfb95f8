"""Overlap metrics on boolean masks: Dice (DSC) and normalised surface Dice (NSD).

Masks are boolean arrays in array axis order (z, y, x for a SimpleITK array); ``spacing`` is in the same
order, in mm. Empty-mask rule for both metrics (FLARE): both masks empty → 1.0; exactly one empty → 0.0.

NSD follows DeepMind's surfel definition (Nikolov et al. 2021, package ``surface-distance``): surface
elements are the marching-cubes triangles of each 2x2x2 neighbourhood, weighted by their area in mm²;
a surfel counts as matched when its distance to the other surface is ≤ the tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from abdoseg.evaluation._surfel_normals import NORMALS_EIGHTHS

#: Boolean mask, any dimensionality 3 (z, y, x).
Mask = np.ndarray
Spacing = Sequence[float]

#: Correlating a mask with this kernel gives each 2x2x2 neighbourhood's code (DeepMind's encoding).
_CODE_KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]], dtype=np.uint8)
#: (256, 4, 3) surfel normals on a unit grid, zero-padded to 4 triangles per code.
_NORMALS = np.zeros((256, 4, 3))
for _code, _triangles in enumerate(NORMALS_EIGHTHS):
    _NORMALS[_code, : len(_triangles)] = np.asarray(_triangles, dtype=float) / 8.0


def dice(gt: Mask, pred: Mask) -> float:
    """DSC = 2|A∩B| / (|A|+|B|); both masks empty → 1.0."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    total = int(np.count_nonzero(gt)) + int(np.count_nonzero(pred))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(gt & pred)) / total


def surfel_areas(spacing: Spacing) -> np.ndarray:
    """Surface area in mm² of each of the 256 neighbourhood codes on a grid with ``spacing`` (3 values)."""
    s0, s1, s2 = _check_spacing(spacing)
    scaled = _NORMALS * np.array([s1 * s2, s0 * s2, s0 * s1])
    return np.linalg.norm(scaled, axis=-1).sum(axis=-1)


@dataclass(frozen=True)
class SurfaceDistances:
    """Surfels of both masks: each surfel's area (mm²) and distance (mm) to the other mask's surface.

    A mask with no surface gives empty arrays; the other mask's distances are then ``inf``.
    """

    gt_distances: np.ndarray
    gt_areas: np.ndarray
    pred_distances: np.ndarray
    pred_areas: np.ndarray


def surface_distances(gt: Mask, pred: Mask, spacing: Spacing) -> SurfaceDistances:
    """Surfel areas and closest-surface distances of two 3-D boolean masks (cropped to both masks' box)."""
    gt, pred = _check_masks(gt, pred)
    spacing = _check_spacing(spacing)
    box = _bounding_box(gt | pred)
    if box is None:
        empty = np.zeros(0)
        return SurfaceDistances(empty, empty, empty, empty)
    codes_gt, codes_pred = (_neighbour_codes(mask[box]) for mask in (gt, pred))
    border_gt = (codes_gt != 0) & (codes_gt != 255)
    border_pred = (codes_pred != 0) & (codes_pred != 255)
    areas = surfel_areas(spacing)
    return SurfaceDistances(
        gt_distances=_distance_to(border_pred, spacing)[border_gt],
        gt_areas=areas[codes_gt[border_gt]],
        pred_distances=_distance_to(border_gt, spacing)[border_pred],
        pred_areas=areas[codes_pred[border_pred]],
    )


def normalized_surface_dice(gt: Mask, pred: Mask, spacing: Spacing, tolerance_mm: float) -> float:
    """NSD at ``tolerance_mm``: matched surfel area of both surfaces / total surfel area of both.

    Both masks empty → 1.0; exactly one empty → 0.0.
    """
    if tolerance_mm < 0:
        raise ValueError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    has_gt, has_pred = bool(np.any(gt)), bool(np.any(pred))
    if not (has_gt or has_pred):
        return 1.0
    if has_gt != has_pred:
        return 0.0
    d = surface_distances(gt, pred, spacing)
    matched = d.gt_areas[d.gt_distances <= tolerance_mm].sum() + d.pred_areas[d.pred_distances <= tolerance_mm].sum()
    return float(matched / (d.gt_areas.sum() + d.pred_areas.sum()))


def _neighbour_codes(mask: Mask) -> np.ndarray:
    """Code of every 2x2x2 neighbourhood (voxel corners), including the corners on the far border."""
    padded = np.zeros(tuple(n + 1 for n in mask.shape), dtype=np.uint8)
    padded[:-1, :-1, :-1] = mask
    return ndimage.correlate(padded, _CODE_KERNEL, mode="constant", cval=0)


def _distance_to(border: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Euclidean distance (mm) of every corner to the nearest ``border`` corner; ``inf`` without border."""
    if not border.any():
        return np.full(border.shape, np.inf)
    return ndimage.distance_transform_edt(~border, sampling=spacing)


def _bounding_box(mask: Mask) -> tuple[slice, ...] | None:
    """Tightest slices holding every True voxel of ``mask``; None when it is empty."""
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    return boxes[0] if boxes else None


def _check_masks(gt: Mask, pred: Mask) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"masks must be 3-D and of one shape, got {gt.shape} and {pred.shape}")
    return gt, pred


def _check_spacing(spacing: Spacing) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing)
    if len(values) != 3 or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing must be 3 positive finite values in mm, got {tuple(spacing)}")
    return values  # type: ignore[return-value]
