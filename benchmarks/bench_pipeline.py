#!/usr/bin/env python3
"""Benchmark: cold end-to-end `predict.sh` per case, per-stage seconds, peak RSS, and the bare network forward.

    python benchmarks/bench_pipeline.py [--sizes S,M,L] [--runtime openvino] [--card flare21|flare21-fp32|FILE.json]
                                        [--model FILE] [--repeats 3] [--threads N]

Volumes come from ../shared/tools/make_bench_volumes.py (512x512x134 / 336 / 672, made once into .cache/bench).
Each run is a fresh process, exactly as the organisers time one container per case (minus the container start):
wall time from exec to exit, peak RSS of that process (its VmHWM, as it logs it), and the stage seconds it logged.
Beside each size, COBRA's published pipeline (benchmarks/cobra_pipeline.py, the peer file, a fresh process) in the
same run, so every figure is also a ratio on one machine: the runs alternate (ours, COBRA's, ours, ...) and /COBRA is
the median of the pairs' ratios (a shared host drifts by +-15 % within minutes); likewise "- fwd" is the median of
each cold run less the steady forward timed right after it (the network compiled once in this process), and "floor"
is benchmarks/floor_process.py beside each run: a fresh process with the same imports, read and write, no model.
Targets (docs/benchmarks.md): cold 512^2x134 <= 0.25x COBRA's pipeline, cold e2e - steady forward <= 1.0 s;
peak RSS <= 1.5 GB at 336 slices, <= 3 GB at 672.
"""
from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED_TOOL = ROOT.parent / "shared" / "tools" / "make_bench_volumes.py"
CACHE = ROOT / ".cache" / "bench"
COBRA_PEER = ROOT.parent / "shared" / "peers" / "cobra" / "cobra_abdomenct1k.onnx"  # benchmark only, never shipped


def cpu_model() -> str:
    """The CPU's model name and its vector ISA flags (a figure from one CPU kind says little about another)."""
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [label for flag, label in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_vnni", "VNNI"),
                                     ("avx_vnni", "AVX-VNNI"), ("amx_tile", "AMX")) if flag in flags]
    return f"{name} [{', '.join(isa) or 'no AVX2'}]"


def ensure_volumes(sizes: list[str]) -> dict[str, Path]:
    missing = [s for s in sizes if not (CACHE / "imagesTs" / f"bench{s}_0000.nii.gz").exists()]
    if missing:
        if not SHARED_TOOL.exists():
            sys.exit(f"bench volumes missing and {SHARED_TOOL} not found")
        subprocess.run([sys.executable, str(SHARED_TOOL), str(CACHE), "--sizes", ",".join(missing)], check=True)
    return {s: CACHE / "imagesTs" / f"bench{s}_0000.nii.gz" for s in sizes}


def cold_run(scan: Path, extra: list[str]) -> dict:
    """One fresh `sh predict.sh IN OUT` on a folder holding only `scan`; wall, peak RSS and the case's log record."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs, log = Path(tmp, "in"), Path(tmp, "out"), Path(tmp, "log.jsonl")
        inputs.mkdir()
        os.symlink(scan, inputs / scan.name)
        cmd = ["sh", str(ROOT / "predict.sh"), str(inputs), str(outputs), "--log", str(log), *extra]
        t0 = time.perf_counter()
        env = {**os.environ, "ABDOSEG_CACHE_DIR": ""}  # no model cache unless --cache-dir is among `extra`
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        err = proc.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"predict.sh failed on {scan.name}:\n{err}")
        record = json.loads(log.read_text().splitlines()[0])
        # the case's own peak (VmHWM, logged by the CLI): wait4's ru_maxrss would count this benchmark's pages,
        # which the child had between fork and exec
        return {"wall": wall, "rss_mb": record["peak_rss_mb"], "record": record}


class BareForward:
    """The network alone (model-grid input, the whole graph) in the same runtime, compiled once in this process:
    `first` is its first run in a fresh session (buffers touched for the first time); `steady(n)` times n more runs
    with the buffers kept between runs, whenever asked, so that each cold run is set against a forward timed
    right after it, on the host in the same state."""

    def __init__(self, card_spec: str, model: Path | None, runtime: str, threads: int) -> None:
        import numpy as np
        import onnx

        from abdoseg.inference.card import load_card
        from abdoseg.inference.graph.runtime import OnnxRuntimeSession, OpenVinoSession

        card, path = load_card(card_spec, model)
        net = onnx.load(str(path))
        if card.graph == "composed":  # cut the network out of the composed graph: "image" -> network scores
            scores = next(n.input[0] for n in net.graph.node if n.op_type == "ArgMax")
            net = onnx.utils.Extractor(net).extract_model(["image"], [scores])
            self.feed = "image"
        else:
            self.feed = card.network_input
        graph = net.SerializeToString()
        self.session = (OpenVinoSession(graph, threads, release_after_run=False) if runtime == "openvino"
                        else OnnxRuntimeSession(graph, threads))
        self.x = np.random.default_rng(0).random(card.image_shape, dtype=np.float32)
        self.first = self.steady(1)[0]

    def steady(self, n: int) -> list[float]:
        times = []
        for _ in range(n):
            t = time.perf_counter()
            self.session.run({self.feed: self.x})
            times.append(time.perf_counter() - t)
        return times


def floor_cold(scan: Path) -> float:
    """Wall seconds of benchmarks/floor_process.py on `scan` as one fresh process: the imports, the read and the
    write of a cold run, without any model work."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "floor_process.py"), str(scan), str(Path(tmp, "out.nii.gz"))]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t0


def cobra_cold(scan: Path, threads: int) -> tuple[float, float] | None:
    """Wall seconds and peak RSS (MB) of COBRA's published pipeline as one fresh process (None: no peer file)."""
    if not COBRA_PEER.is_file():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "cobra_pipeline.py"), str(COBRA_PEER), str(scan),
               str(Path(tmp, "out.nii.gz")), "--threads", str(threads)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"COBRA pipeline failed on {scan.name}:\n{proc.stderr}")
        return wall, float(proc.stdout.split()[-1])  # its own VmHWM


def main() -> None:
    from abdoseg.inference.card import DEFAULT_CARD
    from abdoseg.inference.process.resources import usable_cpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="S,M,L")
    ap.add_argument("--runtime", default="openvino", choices=("openvino", "onnxruntime"))
    ap.add_argument("--card", default=DEFAULT_CARD)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None, help="model cache folder, filled by a warm-up first (as the image build does); default: none")
    ap.add_argument("--skip-cobra", action="store_true", help="no COBRA pipeline rows (ratios shown as nan)")
    a = ap.parse_args()
    threads = a.threads or usable_cpus()
    extra = ["--runtime", a.runtime, "--card", a.card, "--threads", str(threads), "--device", "cpu"]
    if a.model:
        extra += ["--model", str(a.model)]
    if a.cache_dir:
        extra += ["--cache-dir", str(a.cache_dir)]
    volumes = ensure_volumes(a.sizes.split(","))
    # As the image build does (Dockerfile): the app's bytecode compiled first, so that no timed run compiles a
    # changed module's source (PYTHONDONTWRITEBYTECODE would keep it from ever being cached).
    compileall.compile_dir(str(ROOT / "abdoseg"), quiet=1)
    if a.cache_dir:  # as the image build does: a warm-up fills the model cache before any timed run
        subprocess.run([sys.executable, "-m", "abdoseg", "predict", "--warmup", *extra], cwd=ROOT, check=True,
                       capture_output=True)
    bare = BareForward(a.card, a.model, a.runtime, threads)
    forward = bare.steady(a.repeats)
    fwd = statistics.median(forward)

    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"CPU: {cpu_model()}")
    print(f"runtime {a.runtime}, {threads} threads, card {a.card}; bare network forward: first run {bare.first:.2f} s, "
          f"steady (median of {a.repeats}) {fwd:.2f} s  [{', '.join(f'{t:.2f}' for t in forward)}]")
    header = (f"{'case':8} {'size':14} {'cold e2e s':>11} {'- fwd s':>8} {'floor s':>8} {'COBRA s':>8} {'/COBRA':>7} "
              f"{'peak RSS MB':>12}  stages (s, median run)")
    print(header)
    print("-" * len(header))
    for size, scan in volumes.items():
        runs, cobra, fwds, floors = [], [], [], []
        for _ in range(a.repeats):  # alternating, so that each ratio compares runs on the host in the same state
            runs.append(cold_run(scan, extra))
            fwds.append(statistics.median(bare.steady(3)))  # the forward beside this cold run
            floors.append(floor_cold(scan))
            cobra.append(cobra_cold(scan, threads) if not a.skip_cobra else None)
        cobra_s = statistics.median(c[0] for c in cobra) if cobra[0] else float("nan")
        walls = [r["wall"] for r in runs]
        wall = statistics.median(walls)
        ratio = statistics.median(r / c[0] for r, c in zip(walls, cobra)) if cobra[0] else float("nan")
        med = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
        rec = med["record"]
        stages = " ".join(f"{k} {v:.2f}" for k, v in rec["seconds"].items())
        dims = "x".join(str(s) for s in rec["input_size"])
        beyond = statistics.median(w - f for w, f in zip(walls, fwds))  # cold e2e - the forward timed beside it
        floor = statistics.median(floors)
        print(f"bench{size:3} {dims:14} {wall:11.2f} {beyond:8.2f} {floor:8.2f} {cobra_s:8.2f} {ratio:7.3f} "
              f"{max(r['rss_mb'] for r in runs):12.0f}  load {rec['model_load_s']:.2f} {stages}  "
              f"[walls {', '.join(f'{w:.2f}' for w in walls)}; forward {', '.join(f'{f:.2f}' for f in fwds)}; COBRA "
              f"{', '.join(f'{c[0]:.2f}' for c in cobra if c)}"
              f"{f' s, {max(c[1] for c in cobra):.0f} MB' if cobra[0] else ''}]")


if __name__ == "__main__":
    main()
