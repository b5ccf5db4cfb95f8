"""Class scores on the fine grid → labels on the crop's full-resolution grid, one z-slab at a time (imports torch).

The resize is linear with half-pixel centres — the same numbers as
`F.interpolate(scores[None], size, mode="trilinear", align_corners=False)` — computed separably: per output
slab, the two source slices of each output slice are mixed with torch's linear weights along z, the mix is
resized in-plane with `F.interpolate(mode="bilinear")`, and argmax gives uint8 labels that go to the host
at once. Device memory for the resize is therefore bounded by `max_slab_bytes` whatever the scan's length
(a one-shot resize of 5 classes onto 512×512×1000 would need 5 GB of float32).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from abdoseg.inference.card import Shape3

#: Bytes per output voxel per class (float32 scores) plus the argmax (int64) and the uint8 result.
_INDEX_BYTES = 8 + 1


def linear_source(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: the two source indices and the weight of the second (torch's align_corners=False)."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def slab_depth(n_classes: int, plane: tuple[int, int], max_slab_bytes: int) -> int:
    """Output slices per slab so that one slab's buffers stay within `max_slab_bytes` (at least 1)."""
    per_slice = plane[0] * plane[1] * (n_classes * 4 + _INDEX_BYTES)
    return max(1, int(max_slab_bytes // per_slice))


def resize_argmax_slabs(scores: torch.Tensor, out_shape: Shape3, max_slab_bytes: int = 64 << 20) -> np.ndarray:
    """uint8 labels [D, H, W] (host) = argmax over classes of `scores` [C, d, h, w] resized linearly to out_shape.

    Ties go to the lower class index.
    """
    if scores.ndim != 4 or len(out_shape) != 3 or min(out_shape) < 1:
        raise ValueError(f"need scores [C, d, h, w] and a 3D output shape, got {tuple(scores.shape)} and {out_shape!r}")
    if scores.shape[0] > 256:
        raise ValueError(f"uint8 labels hold at most 256 classes, got {scores.shape[0]}")
    depth, height, width = (int(n) for n in out_shape)
    scores = scores.float()
    i0, i1, w1 = linear_source(scores.shape[1], depth)
    out = np.empty((depth, height, width), dtype=np.uint8)
    k = slab_depth(scores.shape[0], (height, width), max_slab_bytes)
    for z0 in range(0, depth, k):
        a, b = i0[z0 : z0 + k], i1[z0 : z0 + k]
        lo, hi = int(a.min()), int(b.max()) + 1
        planes = scores[:, lo:hi]  # [C, n, h, w]: only the source slices this slab reads
        wb = torch.from_numpy(w1[z0 : z0 + k]).to(scores.device)[None, :, None, None]
        ia = torch.from_numpy(a - lo).to(scores.device)
        ib = torch.from_numpy(b - lo).to(scores.device)
        mixed = planes[:, ia] * (1 - wb) + planes[:, ib] * wb  # [C, k, h, w]
        up = F.interpolate(mixed.transpose(0, 1), size=(height, width), mode="bilinear", align_corners=False)
        # max(dim).indices: ties -> lowest class, like argmax, but several times faster on CPU
        out[z0 : z0 + len(a)] = up.max(dim=1).indices.to(torch.uint8).cpu().numpy()
    return out
