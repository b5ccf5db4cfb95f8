"""How fine must the fine grid be? The accuracy ceiling of a grid: reference labels → one-hot → the fine stage's
own resample onto the grid (`abdoseg.inference.fine.preprocess.resample_volume`) → its own slab resize + argmax back
(`abdoseg.inference.fine.slabs`) → DSC / NSD@1mm against the reference (evaluation, FLARE21 rules).
A network can do no better than a perfect prediction on its grid, so this bounds the surface accuracy each
fine spacing allows. The coarse line is the CPU path's way: argmax on the whole-scan 96×192×192 grid, then the
pipeline's nearest upsample (`abdoseg.inference.grid.geometry.upsample_labels`).

    python -m abdoseg.training.fine.resolution --data ../shared/data/flare21 [--spacings 2.5,1.5,1.5 2,1.2,1.2 ...]
    python -m abdoseg.training.fine.resolution --data build/bench --split Ts     # 512x512x336 bench volume
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from abdoseg.evaluation.accuracy import score_case
from abdoseg.evaluation.labelsets import get_labelset
from abdoseg.inference.card import Geometry, Shape3, Spacing3
from abdoseg.inference.fine.crop import organ_box
from abdoseg.inference.fine.preprocess import fine_grid_shape, resample_volume
from abdoseg.inference.fine.slabs import resize_argmax_slabs
from abdoseg.inference.grid.geometry import axis_maps, upsample_labels
from abdoseg.training.fine.data import Scan, find_pairs, read_scan_pair

COARSE_GRID: Shape3 = (96, 192, 192)


def round_trip(labels: np.ndarray, grid: Shape3) -> np.ndarray:
    """Labels → one-hot → resampled onto `grid` → resized back and argmaxed on the labels' grid."""
    scores = torch.stack([resample_volume((labels == c).astype(np.float32), grid, "cpu") for c in range(5)])
    return resize_argmax_slabs(scores, labels.shape)  # type: ignore[arg-type]


def ceiling(scan: Scan, spacing: Spacing3 | None, margin_mm: float = 20.0) -> list[tuple[float, float]]:
    """(DSC, NSD@1mm) per organ after a round trip through a fine grid (`spacing`, on the organ box) or,
    with `spacing` None, through the coarse whole-scan grid."""
    if spacing is None:
        scores = torch.stack([resample_volume((scan.labels == c).astype(np.float32), COARSE_GRID, "cpu")
                              for c in range(5)])
        low = scores.argmax(0).to(torch.uint8).numpy()
        back = upsample_labels(low, axis_maps(scan.labels.shape, scan.spacing, Geometry("resize", COARSE_GRID)))
    else:
        box = organ_box(scan.labels, scan.spacing, margin_mm)
        if box is None:
            raise ValueError(f"{scan.name}: no organ in the reference labels")
        back = np.zeros_like(scan.labels)
        grid = fine_grid_shape(box.shape, scan.spacing, spacing)
        back[box.slices] = round_trip(scan.labels[box.slices], grid)
    return score_case(scan.labels, back, scan.spacing, get_labelset("flare21"))


def _spacing(text: str) -> tuple[float, float, float]:
    parts = tuple(float(v) for v in text.split(","))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"need z,y,x mm, got {text!r}")
    return parts  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="Tr", help="images<split>/labels<split> folders (Ts for bench volumes)")
    p.add_argument("--spacings", type=_spacing, nargs="+",
                   default=[(1.5, 1.0, 1.0), (2.0, 1.2, 1.2), (2.5, 1.5, 1.5), (3.0, 2.0, 2.0)])
    args = p.parse_args(argv)
    print("case          grid            DSC liver kidn splee panc | NSD@1mm liver kidn splee panc")
    for case, image, label in find_pairs(args.data, args.split):
        scan = read_scan_pair(case, image, label)
        for spacing in [None, *args.spacings]:
            scores = ceiling(scan, spacing)
            name = "coarse 96x192x192" if spacing is None else "fine " + "x".join(f"{s:g}" for s in spacing)
            dsc = " ".join(f"{d:.3f}" for d, _ in scores)
            nsd = " ".join(f"{n:.3f}" for _, n in scores)
            print(f"{case:13s} {name:17s} {dsc} | {nsd}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
