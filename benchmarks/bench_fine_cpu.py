#!/usr/bin/env python3
"""Benchmark of the two-stage CPU card (`flare21-fine`) against the coarse card (`flare21`) and COBRA's pipeline.

    python benchmarks/bench_fine_cpu.py [--repeats 3] [--threads 2] [--skip-cost] [--skip-accuracy]

Accuracy: both cards on the real scans of tests/data/flare21 (DSC and NSD@1mm per organ, abdoseg.evaluation, FLARE
rules), each in OpenVINO and onnxruntime, and the share of voxels on which the two runtimes' labels agree.
Cost: fresh `sh predict.sh` processes (benchmarks/bench_pipeline.py's cold_run; the model cache filled first by a
warm-up per card, as the image build does) alternating with COBRA's published pipeline (benchmarks/cobra_pipeline.py)
on benchS (512²×134): each ratio compares runs made side by side; then the peak RSS of both cards on benchM
(512²×336). Targets (docs/benchmarks.md): pancreas DSC >= 0.70 on abdpelvis3mm and every organ's DSC and NSD at least
the coarse card's; cold benchS <= 0.50x COBRA; peak RSS <= 1.5 GB on benchM.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_pipeline import cobra_cold, cold_run, cpu_model, ensure_volumes  # noqa: E402

CARDS = ("flare21", "flare21-fine")
DATA = ROOT / "tests" / "data" / "flare21"
TARGET_RATIO, TARGET_RSS_MB, TARGET_PANCREAS = 0.50, 1536.0, 0.70


def accuracy(threads: int) -> dict[str, dict]:
    """Per scan and card: DSC / NSD@1mm per organ (OpenVINO labels) and the OpenVINO-onnxruntime voxel agreement."""
    import SimpleITK as sitk

    from abdoseg.evaluation.accuracy import score_case
    from abdoseg.evaluation.labelsets import get_labelset
    from abdoseg.inference.pipeline import Predictor
    from abdoseg.training.data import find_cases

    predictors = {(c, rt): Predictor.load(c, runtime=rt, threads=threads, device="cpu")
                  for c in CARDS for rt in ("openvino", "onnxruntime")}
    out: dict[str, dict] = {}
    for case in find_cases(DATA):
        image, ref = sitk.ReadImage(str(case.image)), sitk.ReadImage(str(case.label))
        gt, spacing = sitk.GetArrayFromImage(ref), tuple(ref.GetSpacing())[::-1]
        for card in CARDS:
            ov, ort = (predictors[card, rt].segment_image(image) for rt in ("openvino", "onnxruntime"))
            pairs = score_case(gt, ov, spacing, get_labelset("flare21"))
            out.setdefault(case.name, {})[card] = {"dsc": [round(d, 4) for d, _ in pairs],
                                                   "nsd": [round(n, 4) for _, n in pairs],
                                                   "agreement": float(np.mean(ov == ort))}
    return out


def write_summaries(acc: dict, folder: Path, threads: int) -> None:
    """One summary per scan in benchmarks/bench_gpu.py's --json form (the coarse card as "cpu_path", the two-stage
    card as "fine_path"), which `abdoseg validate-fine` turns into the fine card's validation record."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    for scan, cards in acc.items():
        summary = {"scan": str(DATA / "imagesTr" / f"{scan}_0000.nii.gz"), "labelset": "flare21",
                   "coarse": f"{CARDS[0]} (OpenVINO CPU f32, {threads} threads)",
                   "accuracy": {path: {"dsc": cards[card]["dsc"], "nsd_1mm": cards[card]["nsd"]}
                                for path, card in (("cpu_path", CARDS[0]), ("fine_path", CARDS[1]))}}
        (folder / f"{scan}.json").write_text(json.dumps(summary, indent=1) + "\n")


def cost(repeats: int, threads: int, cache: Path) -> dict[str, dict]:
    """Cold runs on benchS alternating COBRA / flare21 / flare21-fine; then peak RSS on benchM."""
    volumes = ensure_volumes(["S", "M"])
    extra = {c: ["--card", c, "--threads", str(threads), "--device", "cpu", "--cache-dir", str(cache / c)]
             for c in CARDS}
    for c in CARDS:  # as the image build does: a warm-up fills the model cache before any timed run
        subprocess.run([sys.executable, "-m", "abdoseg", "predict", "--warmup", *extra[c]], cwd=ROOT, check=True,
                       capture_output=True)
    runs: dict[str, list] = {"cobra": [], **{c: [] for c in CARDS}}
    for _ in range(repeats):
        runs["cobra"].append(cobra_cold(volumes["S"], threads))
        for c in CARDS:
            runs[c].append(cold_run(volumes["S"], extra[c]))
    out = {"S": {"cobra_s": [r[0] for r in runs["cobra"]]}, "M": {}}
    for c in CARDS:
        walls = [r["wall"] for r in runs[c]]
        out["S"][c] = {"walls": walls, "ratio": statistics.median(w / r[0] for w, r in zip(walls, runs["cobra"])),
                       "rss_mb": max(r["rss_mb"] for r in runs[c]),
                       "stages": sorted(runs[c], key=lambda r: r["wall"])[len(walls) // 2]["record"]["seconds"],
                       "fine": sorted(runs[c], key=lambda r: r["wall"])[len(walls) // 2]["record"].get("fine")}
        m = cold_run(volumes["M"], extra[c])
        out["M"][c] = {"wall": m["wall"], "rss_mb": m["rss_mb"]}
    return out


def report(acc: dict | None, figures: dict | None) -> list[str]:
    lines, verdicts = [], []
    if acc:
        organs = ("liver", "kidneys", "spleen", "pancreas")
        lines.append("accuracy (OpenVINO labels; agreement: share of voxels equal in OpenVINO and onnxruntime)")
        for scan, cards in acc.items():
            for card, r in cards.items():
                cells = " ".join(f"{o} {d:.3f}/{n:.3f}" for o, d, n in zip(organs, r["dsc"], r["nsd"]))
                lines.append(f"  {scan:13} {card:13} DSC/NSD@1mm {cells}  agreement {r['agreement']:.6f}")
            c, f = cards[CARDS[0]], cards[CARDS[1]]
            verdicts.append((f"{scan}: every organ's DSC and NSD >= the coarse card's",
                             all(a >= b for a, b in zip(f["dsc"] + f["nsd"], c["dsc"] + c["nsd"]))))
        pancreas = acc.get("abdpelvis3mm", {}).get(CARDS[1], {}).get("dsc", [0, 0, 0, 0])[3]
        verdicts.append((f"pancreas DSC on abdpelvis3mm {pancreas:.3f} >= {TARGET_PANCREAS}",
                         pancreas >= TARGET_PANCREAS))
    if figures:
        s, m = figures["S"], figures["M"]
        lines.append(f"cold benchS (512x512x134): COBRA {statistics.median(s['cobra_s']):.2f} s "
                     f"[{', '.join(f'{w:.2f}' for w in s['cobra_s'])}]")
        for c in CARDS:
            lines.append(f"  {c:13} median {statistics.median(s[c]['walls']):.2f} s "
                         f"[{', '.join(f'{w:.2f}' for w in s[c]['walls'])}], {s[c]['ratio']:.3f}x COBRA, "
                         f"peak {s[c]['rss_mb']:.0f} MB; stages {s[c]['stages']}; fine {s[c]['fine']}")
            lines.append(f"  {c:13} benchM (512x512x336): {m[c]['wall']:.2f} s, peak RSS {m[c]['rss_mb']:.0f} MB")
        verdicts.append((f"cold two-stage benchS {s[CARDS[1]]['ratio']:.3f}x COBRA <= {TARGET_RATIO}",
                         s[CARDS[1]]["ratio"] <= TARGET_RATIO))
        verdicts.append((f"two-stage peak RSS on benchM {m[CARDS[1]]['rss_mb']:.0f} MB <= {TARGET_RSS_MB:.0f}",
                         m[CARDS[1]]["rss_mb"] <= TARGET_RSS_MB))
    lines += [f"target {text}: {'met' if ok else 'MISSED'}" for text, ok in verdicts]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-cost", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--json-dir", type=Path, default=None,
                   help="write one accuracy summary per scan here (input of abdoseg validate-fine)")
    args = p.parse_args(argv)
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"CPU: {cpu_model()}")
    acc = None if args.skip_accuracy else accuracy(args.threads)
    if acc and args.json_dir:
        write_summaries(acc, args.json_dir, args.threads)
    with tempfile.TemporaryDirectory() as cache:
        figures = None if args.skip_cost else cost(args.repeats, args.threads, Path(cache))
    print("\n".join(report(acc, figures)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
