#!/usr/bin/env python3
"""Benchmark (not a test): cohort throughput on Ray against the single-process loop, and Ray's overhead per case.

    python benchmarks/bench_cohort.py [--copies 12] [--runtime openvino] [--configs 1x2,2x1]

On `--copies` copies of the FLARE-sized benchS volume (512x512x134, made once into .cache/bench by
../shared/tools/make_bench_volumes.py) it times, each as one fresh command from start to exit:
  - `sh predict.sh IN OUT --threads C` (one process, the model loaded once, cases one after another), C = cores;
  - `python -m abdoseg cohort --workers W --threads-per-worker T --address local` for each WxT in --configs.
It prints the CPU model, the load average before each run, cases per minute, the mean seconds one case took
inside its process (predict.sh --log, results.csv), and the time outside the cases per case:
(wall - sum of case seconds / processes) / cases: interpreter and model start-up, and for the cohort runs Ray's
start-up, worker start-up and scheduling. Ray's overhead per case is the cohort runs' figure minus predict.sh's.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_pipeline import cpu_model, ensure_volumes  # noqa: E402  (the same cached benchS volume)


def make_cohort(scan: Path, copies: int, folder: Path) -> Path:
    inputs = folder / "in"
    inputs.mkdir()
    for i in range(copies):
        target = inputs / f"benchS{i:02d}_0000.nii.gz"
        try:
            os.link(scan, target)  # same bytes, no extra disk
        except OSError:
            shutil.copy(scan, target)
    return inputs


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return wall


def cohort_run(inputs: Path, out: Path, workers: int, threads: int, runtime: str) -> tuple[float, float]:
    """Wall seconds of the command, and the mean seconds per case inside the workers."""
    wall = timed([sys.executable, "-m", "abdoseg", "cohort", "--input", str(inputs), "--output", str(out),
                  "--address", "local", "--workers", str(workers), "--threads-per-worker", str(threads),
                  "--runtime", runtime])
    with open(out / "results.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    return wall, sum(float(r["seconds"]) for r in rows) / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=12)
    ap.add_argument("--runtime", choices=("openvino", "onnxruntime"), default="openvino")
    ap.add_argument("--configs", default="1x2,2x1", help="cohort runs as WORKERSxTHREADS, comma-separated")
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    scan = ensure_volumes(["S"])["S"]
    print(f"CPU: {cpu_model()}, {cores} usable cores; {a.copies} copies of {scan.name} (512x512x134); "
          f"runtime {a.runtime}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp:
        inputs = make_cohort(scan, a.copies, Path(tmp))
        load = os.getloadavg()[0]
        log = Path(tmp) / "single.jsonl"
        wall = timed(["sh", "predict.sh", str(inputs), str(Path(tmp) / "single"), "--threads", str(cores),
                      "--runtime", a.runtime, "--log", str(log)])
        per_case = [json.loads(line)["total_s"] for line in log.read_text().splitlines()]
        rows.append((f"predict.sh loop, 1 process x {cores} threads", wall, sum(per_case) / len(per_case), 1, load))
        for spec in a.configs.split(","):
            workers, threads = (int(x) for x in spec.split("x"))
            load = os.getloadavg()[0]
            wall, per_case = cohort_run(inputs, Path(tmp) / f"cohort{spec}", workers, threads, a.runtime)
            rows.append((f"cohort, {workers} worker(s) x {threads} thread(s)", wall, per_case, workers, load))
    print("\n| run | wall s | cases/min | s per case (in its process) | outside the cases, s per case | load before |")
    print("|---|---|---|---|---|---|")
    for name, wall, per_case, procs, load in rows:
        outside = (wall - per_case * a.copies / procs) / a.copies
        print(f"| {name} | {wall:.1f} | {a.copies / wall * 60:.1f} | {per_case:.2f} | {outside:.2f} | {load:.2f} |")


if __name__ == "__main__":
    main()
