"""nnU-Net's resampling (nnunetv2.preprocessing.resampling.default_resampling), without its full-size costs.

Data in: each channel resized as skimage's `resize(order, mode="edge", anti_aliasing=False)` does (scipy's zoom with
grid_mode, edge values beyond the border); for anisotropic spacings (ratio > 3) in-plane slice by slice, then along
the coarse axis with `order_z` (0: nearest), exactly the rule of `determine_do_sep_z_and_axis`.

Scores out: nnU-Net resizes every class's logits back to the scan's grid (order 1), then takes the arg-max. With
linear (or nearest) taps each output voxel's scores are a convex combination of the scores at the corners of its
low-resolution cell, and a convex combination of score vectors that share an arg-max keeps it. So the arg-max is
taken at low resolution, copied where every corner of a voxel's cell agrees, and the scores are interpolated only in
the band of cells whose corners disagree: the same labels as nnU-Net's, for a fraction of the work.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from abdoseg.inference.nnunet.card import Resampling

ANISO_THRESHOLD = 3.0  # nnunetv2.configuration.ANISO_THRESHOLD
_BAND_CHUNK = 1 << 20  # band voxels interpolated at a time (bounds the gathered scores' memory)
_SLAB = 16  # output slices whose band is found at a time
_DENSE_BAND = 0.2  # above this share of a slab in the band, resizing every class axis by axis is cheaper


def compute_new_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, ...]:
    """nnU-Net's compute_new_shape: round(size · spacing / new spacing) per axis."""
    return tuple(int(round(s / n * k)) for s, n, k in zip(spacing, new_spacing, shape))


def separate_axis(spacing: Sequence[float], new_spacing: Sequence[float], force: bool | None) -> int | None:
    """The axis resampled apart from the others (with order_z), or None: nnU-Net's determine_do_sep_z_and_axis."""
    def coarse_axes(s: Sequence[float]) -> list[int]:
        return [i for i, v in enumerate(s) if max(s) / v == 1]

    if force is not None:
        axes = coarse_axes(spacing) if force else []
    elif max(spacing) / min(spacing) > ANISO_THRESHOLD:
        axes = coarse_axes(spacing)
    elif max(new_spacing) / min(new_spacing) > ANISO_THRESHOLD:
        axes = coarse_axes(new_spacing)
    else:
        axes = []
    return axes[0] if len(axes) == 1 else None


def _zoom(image: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """skimage.transform.resize(image, shape, order, mode="edge", anti_aliasing=False), in float32: scipy's zoom
    with grid_mode, then clipped to the input's range (resize's clip=True: no spline overshoot)."""
    factors = [n / s for n, s in zip(shape, image.shape)]
    out = ndimage.zoom(image, factors, order=order, mode="nearest", grid_mode=True, output=np.float32)
    return np.clip(out, image.min(), image.max(), out=out) if order > 1 else out


def resample_data(data: np.ndarray, new_shape: Sequence[int], spacing: Sequence[float],
                  new_spacing: Sequence[float], rule: Resampling) -> np.ndarray:
    """[C, *shape] float32 -> [C, *new_shape] float32, as nnU-Net's resample_data_or_seg_to_shape (not is_seg)."""
    new_shape = tuple(int(s) for s in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data
    axis = separate_axis(spacing, new_spacing, rule.force_separate_z)
    out = np.empty((data.shape[0], *new_shape), np.float32)
    for c, channel in enumerate(data):
        if axis is None:
            out[c] = _cubic_resize(channel, new_shape) if rule.order == 3 else _zoom(channel, new_shape, rule.order)
            continue
        inplane = tuple(channel.shape[axis] if a == axis else n for a, n in enumerate(new_shape))
        if rule.order == 3:
            slices = np.moveaxis(_cubic_resize(channel, inplane, clip_axis=axis), axis, 0)
        else:
            sizes = [n for a, n in enumerate(new_shape) if a != axis]
            slices = np.stack([_zoom(s, sizes, rule.order) for s in np.moveaxis(channel, axis, 0)])
        if slices.shape[0] != new_shape[axis]:
            slices = _resample_axis0(slices, new_shape[axis], rule.order_z)
        out[c] = np.moveaxis(slices, 0, axis)
    return out


_SPLINE_PAD = 12  # scipy's zoom pads "nearest" inputs by 12 edge values before its spline filter


def _resize_axis(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Cubic B-spline resize of `a` along one axis, as scipy's zoom(order=3, mode="nearest", grid_mode=True) does
    along that axis (edge padding, spline prefilter, 4 taps at (i + 0.5)·in/out − 0.5), in float32."""
    n = a.shape[axis]
    if n == size:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (_SPLINE_PAD, _SPLINE_PAD)
    coeffs = ndimage.spline_filter1d(np.pad(a, widths, mode="edge"), 3, axis=axis, output=np.float32,
                                     mode="nearest")
    x = (np.arange(size) + 0.5) * n / size - 0.5 + _SPLINE_PAD
    i = np.floor(x).astype(np.intp)
    t = (x - i).astype(np.float32)
    weights = ((1 - t) ** 3 / 6, (3 * t**3 - 6 * t**2 + 4) / 6, (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6, t**3 / 6)
    shape = [1] * a.ndim
    shape[axis] = size
    out = np.zeros([size if d == axis else s for d, s in enumerate(a.shape)], np.float32)
    for k, w in enumerate(weights):
        out += np.take(coeffs, i - 1 + k, axis=axis) * w.reshape(shape)
    return out


def _cubic_resize(image: np.ndarray, shape: Sequence[int], clip_axis: int | None = None) -> np.ndarray:
    """`_zoom(image, shape, 3)` axis by axis (B-spline interpolation on a grid is separable: the same values, for
    a fraction of the 64-tap 3D work). `clip_axis`: each slice along it clipped to its own range, as skimage
    resizing slice by slice does; else the whole input's range."""
    out = image
    for axis in np.argsort([m / n for m, n in zip(shape, image.shape)]):  # shrink first: less work after
        out = _resize_axis(out, int(shape[axis]), int(axis))
    if out is image:
        return image.astype(np.float32)
    if clip_axis is None:
        return np.clip(out, image.min(), image.max(), out=out)
    others = tuple(a for a in range(image.ndim) if a != clip_axis)
    return np.clip(out, image.min(axis=others, keepdims=True), image.max(axis=others, keepdims=True), out=out)


def _resample_axis0(stack: np.ndarray, size: int, order: int) -> np.ndarray:
    """Along axis 0 only, with nnU-Net's map_coordinates (align_corners=False, mode "nearest")."""
    if order == 0:
        return stack[AxisTaps.of(stack.shape[0], size, 0).low]
    coords = (np.arange(size) + 0.5) * stack.shape[0] / size - 0.5
    grid = np.meshgrid(coords, *[np.arange(n) for n in stack.shape[1:]], indexing="ij")
    return ndimage.map_coordinates(stack, grid, order=order, mode="nearest").astype(np.float32)


@dataclass(frozen=True)
class AxisTaps:
    """Per output index along one axis: the two input taps and the second one's weight (linear, or nearest)."""

    low: np.ndarray
    high: np.ndarray
    weight: np.ndarray

    @classmethod
    def of(cls, size_in: int, size_out: int, order: int) -> AxisTaps:
        """Output i reads input coordinate (i + 0.5)·in/out − 0.5, clamped at the edges (skimage/scipy)."""
        coords = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
        if order == 0 or size_in == size_out:
            # scipy's order 0 rounds half up (floor(x + 0.5)); identical axes read themselves
            idx = np.minimum(np.floor(coords + 0.5), size_in - 1).astype(np.intp)
            return cls(idx, idx, np.zeros(size_out, np.float32))
        low = np.floor(coords).astype(np.intp)
        high = np.minimum(low + 1, size_in - 1)
        return cls(low, high, (coords - low).astype(np.float32))

    @property
    def linear(self) -> bool:
        return bool(np.any(self.weight > 0))


def score_taps(low_shape: Sequence[int], out_shape: Sequence[int], spacing_low: Sequence[float],
               spacing_out: Sequence[float], rule: Resampling) -> list[AxisTaps]:
    """The taps of nnU-Net's probabilities resampling (order 1 in-plane, order_z along a separate axis)."""
    if rule.order > 1 or rule.order_z > 1:
        raise ValueError(f"score resampling of order {rule.order}/{rule.order_z} is not supported (nnU-Net: 1/0)")
    axis = separate_axis(spacing_low, spacing_out, rule.force_separate_z)
    return [AxisTaps.of(n, m, rule.order_z if a == axis else rule.order)
            for a, (n, m) in enumerate(zip(low_shape, out_shape))]


def labels_from_scores(scores: np.ndarray, out_shape: Sequence[int], taps: list[AxisTaps]) -> np.ndarray:
    """uint8 arg-max of `scores` [C, *low] resized onto `out_shape` with `taps`: exact in the band, copied elsewhere."""
    low_labels = np.argmax(scores, axis=0).astype(np.uint8)
    mixed = np.zeros(low_labels.shape, bool)
    for offset in np.ndindex(*(2 if t.linear else 1 for t in taps)):
        if any(offset):
            mixed |= low_labels[_shifted(low_labels, offset)] != low_labels
    labels = np.empty(tuple(out_shape), np.uint8)
    for z0 in range(0, labels.shape[0], _SLAB):  # slab by slab: the band's indices stay small
        index = np.ix_(taps[0].low[z0:z0 + _SLAB], *(t.low for t in taps[1:]))
        labels[z0:z0 + _SLAB] = low_labels[index]
        band_mask = mixed[index]
        if band_mask.mean() > _DENSE_BAND:  # labels change almost everywhere: resize every class, slab-wise
            labels[z0:z0 + _SLAB] = _resized_argmax(scores, taps, slice(z0, z0 + _SLAB))
            continue
        band = np.nonzero(band_mask)
        for first in range(0, band[0].size, _BAND_CHUNK):
            where = (band[0][first:first + _BAND_CHUNK] + z0, *(b[first:first + _BAND_CHUNK] for b in band[1:]))
            labels[where] = _interpolated_argmax(scores, where, taps)
    return labels


def _shifted(a: np.ndarray, offset: Sequence[int]) -> tuple[slice | np.ndarray, ...]:
    """Index of `a` shifted by +offset along each axis, the last plane repeated (edge)."""
    return np.ix_(*(np.minimum(np.arange(n) + o, n - 1) for n, o in zip(a.shape, offset)))


def _resized_argmax(scores: np.ndarray, taps: list[AxisTaps], zs: slice) -> np.ndarray:
    """The arg-max of every class's scores resized (axis by axis: linear taps are separable) for output slices `zs`."""
    best, label = None, None
    for c in range(scores.shape[0]):
        value = scores[c]
        for axis, t in enumerate(taps):
            low, high, w = (t.low[zs], t.high[zs], t.weight[zs]) if axis == 0 else (t.low, t.high, t.weight)
            resized = np.take(value, low, axis=axis)
            if t.linear:
                shape = [1] * value.ndim
                shape[axis] = -1
                w = w.reshape(shape)
                resized = resized * (1 - w) + np.take(value, high, axis=axis) * w
            value = resized
        if best is None:
            best, label = value, np.zeros(value.shape, np.uint8)
        else:
            better = value > best
            best = np.where(better, value, best)
            label[better] = c
    return label


def _interpolated_argmax(scores: np.ndarray, where: tuple[np.ndarray, ...], taps: list[AxisTaps]) -> np.ndarray:
    """The arg-max of the scores interpolated at output voxels `where` (per-axis indices)."""
    corners: list[tuple[np.ndarray, np.ndarray]] = []  # (flat low-res index, weight) per corner of the cell
    per_axis = [[(t.low[w], 1 - t.weight[w]), (t.high[w], t.weight[w])] if t.linear else [(t.low[w], None)]
                for t, w in zip(taps, where)]
    shape = scores.shape[1:]
    for combo in np.ndindex(*(len(p) for p in per_axis)):
        idx = [per_axis[a][k][0] for a, k in enumerate(combo)]
        weight = np.ones(where[0].size, np.float32)
        for a, k in enumerate(combo):
            if per_axis[a][k][1] is not None:
                weight = weight * per_axis[a][k][1]
        corners.append((np.ravel_multi_index(idx, shape), weight))
    best = np.full(where[0].size, -np.inf, np.float32)
    label = np.zeros(where[0].size, np.uint8)
    for c in range(scores.shape[0]):
        flat = scores[c].reshape(-1)
        value = sum(flat[i] * w for i, w in corners)
        better = value > best
        best[better] = value[better]
        label[better] = c
    return label
