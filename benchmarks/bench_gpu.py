#!/usr/bin/env python3
"""Benchmark of the GPU path: stage times, GPU memory and accuracy of the fine path against the CPU path.

Scan: a FLARE-sized volume, by default benchM (512 x 512 x 336, 1 mm slices) made from the real abdpelvis3mm scan by
/work/shared/tools/make_bench_volumes.py (run automatically when the file is missing and the tool is there).

    python benchmarks/bench_gpu.py --device cuda               # the measurement (needs a CUDA torch)
    python benchmarks/bench_gpu.py --device cpu --repeats 1    # smoke run of the same code on CPU (slow)

Per run it prints end-to-end seconds (read -> write, as `python -m abdoseg predict` does it), the pipeline's stage
times, the fine stage's own stage times, and GPU memory: the torch allocator's peak and the device memory in use
(NVML, all processes: includes the CUDA contexts and onnxruntime's CUDA arena). Then DSC / NSD@1mm of the CPU path
and of the fine path against the bench labels (evaluation, FLARE21 rules), and the targets:
<= 2 s per case end to end warm, <= 1.5 GB GPU memory, NSD@1mm of the fine path above the CPU path.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from abdoseg.inference.card import WEIGHTS_DIR  # noqa: E402
from abdoseg.inference.pipeline import Predictor, StageClock  # noqa: E402
from abdoseg.inference.process.resources import gpu_memory_mb  # noqa: E402

BENCH_DIR = ROOT / "build" / "bench"
#: make_bench_volumes.py reads its source scan relative to itself (../data): a `shared/` folder beside the
#: checkout (as on the device machines) or the workstation's /work/shared.
TOOLS = (ROOT / "shared" / "tools" / "make_bench_volumes.py", Path("/work/shared/tools/make_bench_volumes.py"))
TARGET_S, TARGET_GPU_MB = 2.0, 1536.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--scan", type=Path, default=BENCH_DIR / "imagesTs" / "benchM_0000.nii.gz")
    p.add_argument("--labels", type=Path, default=None, help="reference labels (default: the bench labelsTs file)")
    p.add_argument("--tool", type=Path, default=next((t for t in TOOLS if t.is_file()), TOOLS[-1]),
                   help="make_bench_volumes.py, run when --scan is missing")
    p.add_argument("--card", default="flare21-fp32",
                   help="coarse model card (default: the fp32 one; as abdoseg predict --card)")
    p.add_argument("--model", type=Path, default=None, help="coarse ONNX file (as python -m abdoseg predict --model)")
    p.add_argument("--fine-weights", type=Path, default=WEIGHTS_DIR, help="folder with fine.json + fine.pt")
    p.add_argument("--runtime", choices=("onnxruntime", "openvino"), default=None,
                   help="coarse runtime (default: onnxruntime for cuda, openvino for cpu)")
    p.add_argument("--coarse-device", choices=("cpu", "cuda"), default="cpu",
                   help="where the coarse stage runs: the host CPU (--runtime) or the GPU (onnxruntime's CUDA "
                   "provider, the card's graph whole)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up run")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True")
    p.add_argument("--json", type=Path, default=None, help="also write the summary here")
    return p.parse_args(argv)


def ensure_scan(scan: Path, tool: Path) -> None:
    if scan.is_file():
        return
    if not tool.is_file():
        raise SystemExit(f"bench_gpu: {scan} not found and no {tool} to make it (pass --scan)")
    size = scan.name.removeprefix("bench")[:1]
    print(f"bench_gpu: making {scan} with {tool} --sizes {size}", file=sys.stderr)
    subprocess.run([sys.executable, str(tool), str(scan.parent.parent), "--sizes", size], check=True)


def gpu_figures(device: str) -> dict[str, float]:
    if device != "cuda":
        return {}
    import torch

    free, total = torch.cuda.mem_get_info()
    return {"torch_peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20,
            "torch_peak_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
            "device_in_use_mb": (total - free) / 2**20,
            "nvml_used_mb": gpu_memory_mb() or float("nan")}


def timed_run(predictor: Predictor, scan: Path, out: Path, device: str) -> dict:
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    clock = StageClock()
    t0 = time.perf_counter()
    predictor.predict_file(scan, out, clock)
    total = time.perf_counter() - t0
    stages = {k: round(v, 4) for k, v in clock.seconds.items()}
    fine = {k: round(v, 4) if isinstance(v, float) else v for k, v in clock.details.get("fine", {}).items()}
    return {"end_to_end_s": round(total, 4), "stages": stages, "fine": fine, **gpu_figures(device)}


def score(pred_path: Path, labels_path: Path, labelset: str) -> dict[str, list[float]]:
    from abdoseg.evaluation.accuracy import read_labels, score_case
    from abdoseg.evaluation.labelsets import get_labelset

    gt, pred = read_labels(labels_path), read_labels(pred_path)
    pairs = score_case(gt.array, pred.array, gt.spacing_zyx, get_labelset(labelset))
    return {"dsc": [round(d, 4) for d, _ in pairs], "nsd_1mm": [round(n, 4) for _, n in pairs]}


def format_summary(summary: dict) -> str:
    lines = [f"{summary['scan']} on {summary['device']}:"]
    for name, acc in summary.get("accuracy", {}).items():
        dsc = " ".join(f"{v:.3f}" for v in acc["dsc"])
        nsd = " ".join(f"{v:.3f}" for v in acc["nsd_1mm"])
        lines.append(f"  {name:9s} DSC {dsc} | NSD@1mm {nsd}   (liver kidneys spleen pancreas)")
    for name, t in summary["targets"].items():
        met = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
        value = "n/a" if t["value"] is None or t["value"] != t["value"] else f"{t['value']:.3f}"
        lines.append(f"  {name}: {value} (target {t['target']}): {met}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_scan(args.scan, args.tool)
    labels = args.labels or args.scan.parent.parent / "labelsTs" / args.scan.name.replace("_0000", "")
    runtime = args.runtime or ("onnxruntime" if args.device == "cuda" else "openvino")
    from abdoseg.inference.fine import FineStage

    if args.device == "cuda" and args.cudnn_benchmark:
        import torch

        torch.backends.cudnn.benchmark = True
    # one coarse model for both paths, as the CPU path runs it; the fine path adds the stage from --fine-weights
    predictor = Predictor.load(args.card, args.model, runtime, args.threads, device=args.coarse_device, fine=False)
    fine = FineStage.load(args.fine_weights, args.device)
    print(f"bench_gpu: {args.scan.name}, coarse {predictor.session.description}, fine {fine.card.name} "
          f"{fine.card.architecture} patch {fine.card.patch_size} on {args.device}", file=sys.stderr)

    summary: dict = {"scan": str(args.scan), "device": args.device, "runs": [],
                     "coarse": f"{predictor.card.name} ({predictor.session.description})"}
    with tempfile.TemporaryDirectory() as tmp:
        cpu_out, fine_out = Path(tmp) / "cpu.nii.gz", Path(tmp) / "fine.nii.gz"
        predictor.fine = None
        summary["cpu_path"] = timed_run(predictor, args.scan, cpu_out, "cpu")  # one cold run: reference labels
        print(f"cpu path (one cold run): {json.dumps(summary['cpu_path'])}", file=sys.stderr)
        predictor.fine = fine
        for i in range(args.repeats + 1):
            run = timed_run(predictor, args.scan, fine_out, args.device)
            print(f"{'warm-up' if i == 0 else f'run {i}'}: {json.dumps(run)}", file=sys.stderr)
            if i:
                summary["runs"].append(run)
        if labels.is_file():
            labelset = fine.card.labelset
            summary["labelset"] = labelset
            summary["accuracy"] = {"cpu_path": score(cpu_out, labels, labelset),
                                   "fine_path": score(fine_out, labels, labelset)}
    runs = summary["runs"] or [run]
    best = min(r["end_to_end_s"] for r in runs)
    gpu_mb = max((r.get("nvml_used_mb", float("nan")) for r in runs), default=float("nan"))
    if np.isnan(gpu_mb):
        gpu_mb = max((r.get("device_in_use_mb", float("nan")) for r in runs), default=float("nan"))
    acc = summary.get("accuracy")
    nsd_gain = None
    if acc is not None:
        nsd_gain = float(np.mean(acc["fine_path"]["nsd_1mm"]) - np.mean(acc["cpu_path"]["nsd_1mm"]))
    gpu_met = None if np.isnan(gpu_mb) else bool(gpu_mb <= TARGET_GPU_MB)
    summary["targets"] = {
        "end_to_end_warm_s": {"value": best, "target": TARGET_S, "met": best <= TARGET_S},
        "gpu_memory_mb": {"value": gpu_mb, "target": TARGET_GPU_MB, "met": gpu_met},
        "mean_nsd_1mm_gain": {"value": nsd_gain, "target": 0.0, "met": None if nsd_gain is None else nsd_gain > 0},
    }
    print(format_summary(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
