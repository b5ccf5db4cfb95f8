"""Voxel correspondence between the canonical full-resolution grid and the model grid, one axis at a time.

One convention serves everything: the anti-aliased downsample inside the ONNX graph (preprocess_graph.py
builds these weights in-graph), label downsampling for training, and the nearest upsample of predictions.
Output voxel i of an axis is centred at input index

    c_i = (i - (n_out - 1) / 2) * step + (n_in - 1) / 2

where `step` is input voxels per output voxel: n_in / n_out in "resize" mode (this is exactly the half-pixel
convention of a plain resize) and target_spacing / input_spacing in "spacing" mode (a canvas centred on the
scan). The downsample weights are a triangle (linear) filter widened by the step when shrinking, i.e. the
anti-aliased linear resize, with rows normalised; output voxels centred outside the scan get no weight and read
the card's pad value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from abdoseg.inference.card import Geometry, Shape3, Spacing3


@dataclass(frozen=True)
class AxisMap:
    """Correspondence along one axis: `n_in` full-resolution voxels, `n_out` model voxels, `step` in:out."""

    n_in: int
    n_out: int
    step: float

    def __post_init__(self) -> None:
        if self.n_in < 1 or self.n_out < 1 or not self.step > 0:
            raise ValueError(f"AxisMap needs positive sizes and step, got {self}")

    def centers(self) -> np.ndarray:
        """c_i: the input-index coordinate of each output voxel centre, shape [n_out]."""
        return (np.arange(self.n_out) - (self.n_out - 1) / 2) * self.step + (self.n_in - 1) / 2

    def inside(self) -> np.ndarray:
        """Output voxels whose centre lies inside the scan (within half a voxel of its first/last centre)."""
        c = self.centers()
        return (c >= -0.5) & (c <= self.n_in - 0.5)

    def weights(self) -> np.ndarray:
        """Anti-aliased linear resampling matrix [n_out, n_in]; rows of outside voxels are zero."""
        scale = min(1.0 / self.step, 1.0)
        w = np.maximum(0.0, 1.0 - np.abs(np.arange(self.n_in)[None, :] - self.centers()[:, None]) * scale)
        w *= self.inside()[:, None]
        total = w.sum(axis=1, keepdims=True)
        return np.divide(w, total, out=np.zeros_like(w), where=total > 0)

    def nearest_input(self) -> np.ndarray:
        """For each output voxel, the nearest input voxel (clipped into the scan), shape [n_out]."""
        return np.clip(np.floor(self.centers() + 0.5), 0, self.n_in - 1).astype(np.intp)

    def nearest_output(self) -> np.ndarray:
        """For each input voxel, the output voxel whose cell contains it, or -1 off the model grid, [n_in]."""
        i = np.floor((np.arange(self.n_in) - (self.n_in - 1) / 2) / self.step + (self.n_out - 1) / 2 + 0.5)
        return np.where((i >= 0) & (i < self.n_out), i, -1).astype(np.intp)


def axis_maps(shape: Shape3, spacing: Spacing3, geometry: Geometry) -> tuple[AxisMap, AxisMap, AxisMap]:
    """The three axis maps (z, y, x) from a canonical full-resolution grid to the model grid."""
    if len(shape) != 3 or len(spacing) != 3:
        raise ValueError(f"need a 3D shape and spacing, got {shape!r} and {spacing!r}")
    if geometry.mode == "slices":  # every axial slice kept (z: identity), each stretched in-plane onto shape[1:]
        z = AxisMap(int(shape[0]), int(shape[0]), 1.0)
        return (z, *(AxisMap(int(n), int(m), n / m) for n, m in zip(shape[1:], geometry.shape[1:])))  # type: ignore[return-value]
    if geometry.mode == "resize":
        steps = [n_in / n_out for n_in, n_out in zip(shape, geometry.shape)]
    else:
        assert geometry.spacing is not None  # guaranteed by Geometry
        steps = [t / s for t, s in zip(geometry.spacing, spacing)]
    return tuple(AxisMap(int(n), int(m), float(st)) for n, m, st in zip(shape, geometry.shape, steps))  # type: ignore[return-value]


def downsample_labels(labels: np.ndarray, maps: tuple[AxisMap, AxisMap, AxisMap]) -> np.ndarray:
    """Nearest-neighbour labels on the model grid (voxels off the scan become 0)."""
    out = labels
    for axis, m in enumerate(maps):
        out = out.take(m.nearest_input(), axis=axis)
        outside = ~m.inside()
        if outside.any():  # `take` returned a new array: safe to write
            index = [slice(None)] * 3
            index[axis] = outside
            out[tuple(index)] = 0
    return np.ascontiguousarray(out)


def upsample_labels(labels: np.ndarray, maps: tuple[AxisMap, AxisMap, AxisMap]) -> np.ndarray:
    """Nearest-neighbour labels on the full-resolution grid (voxels off the model grid become 0).

    Uses `ndarray.take` per axis, x then y then z: the largest array is then made by the z take, which copies
    whole planes (2-5x faster than z, y, x order, where the last take gathers single voxels along x;
    docs/decisions.md). A padded background row stands in for
    "off the grid" so no masking pass is needed.
    """
    out = labels
    for axis in (2, 1, 0):
        m = maps[axis]
        index = m.nearest_output()
        if (index < 0).any():
            pad = [(0, 0)] * 3
            pad[axis] = (0, 1)
            out = np.pad(out, pad)  # index -1 now reads the zero row at the end
        out = out.take(index, axis=axis)
    return out
