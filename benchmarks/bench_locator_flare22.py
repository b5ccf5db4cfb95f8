"""Which locator the FLARE22 card needs: located ranges and kept organ voxels on long variants of the real scan.

    python benchmarks/bench_locator_flare22.py [--locator PATH] [--margins 30 45 60] [--threads 1]

The long variants are those of tests/inference/test_long_scans.py: abdpelvis3mm with its own mirrored organ-free
slices appended (abdoseg.training.long_scans), here with its FLARE22 labels (tests/data/flare22), so the filler
starts below the lowest FLARE22 organ slice (the IVC, 27 mm below the kidneys). For each locator and margin:
the located range against the FLARE22 organs' z-extent (slack below / above, mm; negative: organ slices cut off),
and the share of the un-padded run's organ voxels that the long scan's run keeps on the same voxels. Candidates:
the card as shipped (no locator), the FLARE21 locator (abdoseg_locator.onnx, trained on the four FLARE21 organs)
at each margin, and `--locator` files (e.g. one trained by `abdoseg train-locator` on FLARE22 label maps).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.bench_pipeline import cpu_model

DATA = ROOT / "tests" / "data"
CARD = ROOT / "abdoseg" / "weights" / "abdoseg_flare22.json"
FLARE21_LOCATOR = ROOT / "abdoseg" / "weights" / "abdoseg_locator.onnx"
#: (mm below, mm above) appended to abdpelvis3mm, as tests/inference/test_long_scans.py
VARIANTS = {"top": (300, 0), "bottom": (0, 300), "middle": (225, 225), "whole": (525, 525), "2000mm": (1664, 0)}


def scan_and_labels():
    import SimpleITK as sitk

    return (sitk.ReadImage(str(DATA / "flare21" / "imagesTr" / "abdpelvis3mm_0000.nii.gz")),
            sitk.ReadImage(str(DATA / "flare22" / "labelsTr" / "abdpelvis3mm.nii.gz")))


def with_locator(predictor, path: Path | None, margin: float):
    """The predictor with the card's locator section replaced (None: no locator)."""
    from abdoseg.inference.card import LocatorSpec, sha256_of

    spec = None if path is None else LocatorSpec(model_file=str(path), sha256=sha256_of(path), margin_mm=margin)
    predictor.card = dataclasses.replace(predictor.card, locator=spec)
    predictor._locator = None
    return predictor


def kept(reference: np.ndarray, pred: np.ndarray) -> float:
    """Share of the reference's organ voxels that carry the same label in `pred`."""
    organ = reference > 0
    return float(np.mean(pred[organ] == reference[organ])) if organ.any() else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--locator", type=Path, nargs="*", default=[], help="more locator files to try")
    p.add_argument("--locator-margins", type=float, nargs="+", default=(30.0,), help="their margins (mm)")
    p.add_argument("--margins", type=float, nargs="*", default=(30.0, 45.0, 60.0))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import SimpleITK as sitk

    from abdoseg.inference.pipeline import Predictor, StageClock
    from abdoseg.training.long_scans import long_scan

    image, label = scan_and_labels()
    predictor = Predictor.load(CARD, runtime="openvino", threads=args.threads)
    reference = predictor.segment_image(image)  # 336 mm: shorter than the canvas, never located
    n = reference.shape[0]
    candidates = [("none (as shipped)", None, 0.0)] + [("FLARE21 locator", FLARE21_LOCATOR, m) for m in args.margins]
    candidates += [(path.name, path, m) for path in args.locator for m in args.locator_margins]
    print(f"# {cpu_model()}; openvino, {args.threads} threads; card {CARD.name}")
    print("| locator | margin mm | scan | length mm | FLARE22 organs mm | located mm | slack below / above mm "
          "| organ voxels kept |")
    print("|---|---|---|---|---|---|---|---|")
    for variant, (below, above) in VARIANTS.items():
        img, lab = long_scan(image, label, below, above)
        gt = sitk.GetArrayFromImage(lab)
        sz = img.GetSpacing()[2]
        organ = np.flatnonzero(gt.any(axis=(1, 2)))
        organ_mm = (organ[0] * sz, (organ[-1] + 1) * sz)
        first = round(below / sz)  # where the un-padded scan's slices lie in the long one
        for name, path, margin in candidates:
            clock = StageClock()
            pred = with_locator(predictor, path, margin).segment_image(img, clock)
            located = clock.details.get("locate", {}).get("organs", {}).get("mm")
            slack = "—" if not located else f"{organ_mm[0] - located[0]:.0f} / {located[1] - organ_mm[1]:.0f}"
            share = kept(reference, pred[first:first + n])
            print(f"| {name} | {margin:.0f} | {variant} | {len(gt) * sz:.0f} | {organ_mm[0]:.0f}-{organ_mm[1]:.0f} | "
                  f"{located or 'not located'} | {slack} | {share:.4f} |", flush=True)


if __name__ == "__main__":
    main()
