"""A scan's grid, and its voxels as canonical int16 HU: the input of the graph, for inference and training alike.

The graph takes int16 HU so the caller holds 2 bytes per voxel instead of 4 while the network runs (the
graph casts to float32 internally, a transient the runtime frees before the network starts), and a scan
already stored canonical in int16 (as FLARE scans usually are) is passed without any copy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from abdoseg.inference.grid.orientation import Reorientation, orientation_of

HU_MIN, HU_MAX = -32768, 32767
AIR_HU = -1024


@dataclass(frozen=True)
class Grid:
    """Everything needed to put a label map back on a scan's exact grid (SimpleITK x,y,z conventions)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image) -> "Grid":
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def apply_to(self, image) -> None:
        if image.GetSize() != self.size:
            raise ValueError(f"label map size {image.GetSize()} differs from the scan's {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)


def canonical_hu(voxels: np.ndarray, grid: Grid, orientation: str,
                 chunk: int = 16) -> tuple[np.ndarray, tuple[float, float, float], Reorientation]:
    """A scan's (z,y,x) voxels in the canonical layout as int16 HU, its canonical spacing, and the reorientation.

    int16 scans keep their values, without a copy when already canonical (the result is then a view of
    `voxels`); other types are rounded and clipped to the int16 range, NaN and -inf read as air, +inf as the
    maximum; float conversion runs in slabs of `chunk` slices so no full-size float64 temporary is made.
    For a SimpleITK image: `canonical_hu(sitk.GetArrayViewFromImage(image), Grid.of(image), ...)`, keeping the
    image alive while the result is used.
    """
    if voxels.shape != tuple(grid.size)[::-1]:
        raise ValueError(f"voxel array shape {voxels.shape} does not match the grid size {grid.size} (x,y,z)")
    orient = Reorientation.between(orientation_of(grid.direction), orientation)
    view = orient.apply(voxels)
    spacing = orient.spacing(tuple(grid.spacing)[::-1])
    if view.dtype == np.int16:
        return (view if view.flags.c_contiguous else np.ascontiguousarray(view)), spacing, orient
    ct = np.empty(view.shape, np.int16)
    is_float = np.issubdtype(view.dtype, np.floating)
    for start in range(0, view.shape[0], chunk):
        slab = view[start:start + chunk]
        if is_float:
            slab = np.rint(np.nan_to_num(slab, nan=AIR_HU, posinf=HU_MAX, neginf=AIR_HU))
        ct[start:start + chunk] = np.clip(slab, HU_MIN, HU_MAX)
    return ct, spacing, orient
