"""Per-organ statistics of a label map on its scan's grid (`--statistics`): volume, HU, bounding box, centroid.

Everything is computed on the input grid (the label map the product writes): volume = voxel count x the input's
voxel volume; positions are patient coordinates in mm as ITK and DICOM give them (LPS: x to the patient's left,
y to the back, z to the head), voxel centres mapped through the scan's origin, spacing and direction.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from abdoseg.inference.grid.scan import Grid


def index_to_patient(grid: Grid, index_xyz: np.ndarray) -> np.ndarray:
    """Continuous (x,y,z) voxel indices (N,3) -> patient coordinates in mm (N,3)."""
    direction = np.asarray(grid.direction, float).reshape(3, 3)
    return np.asarray(grid.origin, float) + (np.asarray(index_xyz, float) * np.asarray(grid.spacing)) @ direction.T


def _axis_profile(mask: np.ndarray, axis: int) -> np.ndarray:
    """Voxel count of `mask` (z,y,x) per index along one array axis."""
    return mask.sum(axis=tuple(a for a in range(3) if a != axis), dtype=np.int64)


def organ_statistics(labels: np.ndarray, hu: np.ndarray, grid: Grid, label: int) -> dict[str, Any]:
    """One organ's figures; `labels` and `hu` are (z,y,x) arrays on `grid`. An absent organ has volume 0 and
    None for the rest."""
    mask = labels == label
    profiles = [_axis_profile(mask, a) for a in (2, 1, 0)]  # x, y, z
    count = int(profiles[0].sum())
    voxel_ml = float(np.prod(grid.spacing)) / 1000.0
    result: dict[str, Any] = {"label": label, "voxels": count, "volume_ml": round(count * voxel_ml, 3)}
    if count == 0:
        return result | {"hu": None, "bbox_mm": None, "bbox_index": None, "centroid_mm": None}
    values = hu[mask].astype(np.float64)
    lo = [int(np.flatnonzero(p)[0]) for p in profiles]
    hi = [int(np.flatnonzero(p)[-1]) for p in profiles]
    centroid_index = [float(np.dot(np.arange(p.size), p)) / count for p in profiles]
    corners = np.array([[(lo, hi)[(k >> a) & 1][a] for a in range(3)] for k in range(8)], float)
    corners_mm = index_to_patient(grid, corners)
    return result | {
        "hu": {"mean": round(float(values.mean()), 2), "std": round(float(values.std()), 2),
               "min": float(values.min()), "max": float(values.max())},
        "bbox_mm": {"min": _mm(corners_mm.min(axis=0)), "max": _mm(corners_mm.max(axis=0))},
        "bbox_index": {"min": lo, "max": hi},
        "centroid_mm": _mm(index_to_patient(grid, np.array([centroid_index]))[0]),
    }


def _mm(values: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in values]


def case_statistics(labels: np.ndarray, hu: np.ndarray, grid: Grid, names: dict[int, str]) -> dict[str, Any]:
    """The `<case>.json` content: the grid and one entry per organ of `names` (the card's label set, id -> organ
    name; background left out)."""
    if labels.shape != hu.shape or labels.shape != tuple(grid.size)[::-1]:
        raise ValueError(f"labels {labels.shape}, scan {hu.shape} and grid {grid.size} (x,y,z) do not match")
    return {
        "grid": {"size_xyz": list(grid.size), "spacing_mm": list(grid.spacing), "origin_mm": list(grid.origin),
                 "direction": list(grid.direction)},
        "coordinates": "patient, mm, LPS (x: patient's left, y: posterior, z: head), voxel centres",
        "bbox": "axis-aligned in patient coordinates, through the centres of the organ's extreme voxels",
        "organs": {name: organ_statistics(labels, hu, grid, label) for label, name in names.items() if label},
    }
