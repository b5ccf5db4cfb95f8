"""Check one container run's outputs against its inputs: the harness's contract for every case.

    python check_outputs.py INPUTS OUTPUTS [--labels LABELS] [--liver-optional] [--max-label N]

For each INPUTS/<case>_0000.nii.gz: OUTPUTS holds exactly <case>.nii.gz (nothing else), readable by anyone;
its grid (size, spacing, origin, direction) is the input's; its pixels are uint8 labels within 0..4 (0..N with
--max-label: 13 for a FLARE22 card) with the liver (1) present (unless --liver-optional: an untrained path-check model). With --labels, Dice against LABELS/<case>.nii.gz is printed (information, not a gate).
Prints one line per case; exits 1 naming every failed check.
"""
from __future__ import annotations

import argparse
import stat
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

LABELS = {1: "liver", 2: "kidneys", 3: "spleen", 4: "pancreas"}
SUFFIX = "_0000.nii.gz"


def grid_problems(out: sitk.Image, ref: sitk.Image) -> list[str]:
    """Differences between two images' grids; spacing/origin/direction compared to float32 header precision."""
    problems = []
    if out.GetSize() != ref.GetSize():
        problems.append(f"size {out.GetSize()} != input {ref.GetSize()}")
    for name, a, b, tol in (("spacing", out.GetSpacing(), ref.GetSpacing(), 1e-6),
                            ("origin", out.GetOrigin(), ref.GetOrigin(), 1e-6),
                            ("direction", out.GetDirection(), ref.GetDirection(), 1e-6)):
        a, b = np.asarray(a), np.asarray(b)
        dev = np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))
        if dev > tol:
            problems.append(f"{name} {a.round(6).tolist()} != input {b.round(6).tolist()}")
    return problems


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def check_case(scan: Path, outputs: Path, labels: Path | None, liver: bool = True,
               max_label: int = max(LABELS)) -> tuple[list[str], str]:
    case = scan.name[: -len(SUFFIX)]
    out_path = outputs / f"{case}.nii.gz"
    if not out_path.is_file():
        return [f"{case}: no output {out_path.name}"], ""
    problems = []
    mode = out_path.stat().st_mode
    if not mode & stat.S_IROTH:
        problems.append(f"{case}: output mode {stat.filemode(mode)} is not readable by other users")
    out = sitk.ReadImage(str(out_path))
    ref = sitk.ReadImage(str(scan))
    problems += [f"{case}: {p}" for p in grid_problems(out, ref)]
    if out.GetPixelID() != sitk.sitkUInt8:
        problems.append(f"{case}: pixel type {out.GetPixelIDTypeAsString()}, expected 8-bit unsigned integer")
    arr = sitk.GetArrayFromImage(out)
    values = set(np.unique(arr).tolist())
    if not values <= set(range(max_label + 1)):
        problems.append(f"{case}: label values {sorted(values)} outside 0..{max_label}")
    if liver and 1 not in values:
        problems.append(f"{case}: no liver (label 1) in the output")
    summary = f"{case}: {'x'.join(map(str, out.GetSize()))} labels {sorted(values)}"
    ref_path = labels / f"{case}.nii.gz" if labels else None
    if ref_path is not None and ref_path.is_file() and not problems and max_label == max(LABELS):
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(ref_path)))
        if truth.shape == arr.shape:
            summary += " | Dice " + " ".join(f"{name} {dice(arr == k, truth == k):.3f}" for k, name in LABELS.items())
    return problems, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("inputs", type=Path)
    p.add_argument("outputs", type=Path)
    p.add_argument("--labels", type=Path, default=None)
    p.add_argument("--liver-optional", action="store_true", help="no liver needed (a tiny untrained model)")
    p.add_argument("--max-label", type=int, default=max(LABELS), help="largest label allowed (FLARE22: 13)")
    args = p.parse_args(argv)
    scans = sorted(args.inputs.glob(f"*{SUFFIX}"))
    if not scans:
        print(f"check: no *{SUFFIX} in {args.inputs}", file=sys.stderr)
        return 1
    problems = []
    expected = {s.name[: -len(SUFFIX)] + ".nii.gz" for s in scans}
    extra = sorted(p.name for p in args.outputs.iterdir() if p.name not in expected)
    if extra:
        problems.append(f"unexpected files in outputs: {extra}")
    for scan in scans:
        case_problems, summary = check_case(scan, args.outputs, args.labels, not args.liver_optional, args.max_label)
        problems += case_problems
        if summary:
            print(f"check: {summary}")
    for line in problems:
        print(f"check: FAIL {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
