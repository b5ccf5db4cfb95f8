"""A cold `abdoseg predict` with an imported nnU-Net 3d_fullres card beside `nnUNetv2_predict -device cpu
--disable_tta`, on the same scans and threads, side by side in one run: wall time and peak RSS of each process.

The network is the planner's full-size 3d_fullres (nnUNetPlans for the two bundled scans: ~31 M parameters, patch
64x192x192) with seeded random weights: the work per window is the real one, the labels are not. Both commands run
the same folder (one fold); abdoseg runs its card (abdoseg import-nnunet, or the contract written by the test
helper where the importer is absent). Needs the nnU-Net environment (nnunetv2 + torch + abdoseg's runtime).

usage: .venv-nnunet/bin/python benchmarks/nnunet_vs_nnunetv2.py --plans PLANS.json --dataset DATASET.json
         --scans benchS_0000.nii.gz [benchM_0000.nii.gz ...] [--threads 2] [--work /tmp/nnunet_bench] [--repeats 1]
(scans: /work/shared/tools/make_bench_volumes.py OUT writes them; OUT/imagesTs/bench{S,M}_0000.nii.gz)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASET = "Dataset999_NnunetBench"  # nnUNetv2_predict finds the model folder by dataset name under nnUNet_results
sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    family = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("cpu family")), "?")
    return f"{name} (cpu family {family}), {os.cpu_count()} CPUs visible"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--plans", type=Path, required=True, help="nnU-Net plans with a full-size 3d_fullres")
    p.add_argument("--dataset", type=Path, required=True, help="the dataset.json beside them")
    p.add_argument("--scans", type=Path, nargs="+", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp/nnunet_bench"))
    args = p.parse_args()

    from tests.helpers.nnunet import random_model_folder
    from tests.helpers.nnunet_reference import import_card

    print(f"CPU: {cpu_model()}; threads {args.threads}")
    plans, dataset = json.loads(args.plans.read_text()), json.loads(args.dataset.read_text())
    folder = random_model_folder(args.work / "results" / DATASET, plans, "3d_fullres", dataset, folds=(0,))
    card = import_card(folder, args.work / "cards" / "full_3d_fullres")
    n_params = _parameters(folder)
    print(f"network: {plans['plans_name']} 3d_fullres, {n_params / 1e6:.1f} M parameters, "
          f"patch {plans['configurations']['3d_fullres']['patch_size']}")
    threads = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=threads, nnUNet_def_n_proc="1", nnUNet_n_proc_DA="1",
               nnUNet_results=str(args.work / "results"), nnUNet_raw=str(args.work), nnUNet_preprocessed=str(args.work))
    bin_dir = Path(sys.executable).parent
    print("| scan | nnUNetv2_predict s | abdoseg s | ratio | nnU-Net peak MB | abdoseg peak MB | ratio "
          "| abdoseg stages s |")
    print("|---|---|---|---|---|---|---|---|")
    for scan in args.scans:
        case_in = args.work / "in" / scan.stem.split(".")[0]
        shutil.rmtree(case_in, ignore_errors=True)
        case_in.mkdir(parents=True)
        os.symlink(scan.resolve(), case_in / scan.name)
        ours = [sys.executable, "-m", "abdoseg", "predict", "-i", str(case_in), "-o", str(args.work / "out_abdoseg"),
                "--card", str(card), "--threads", threads, "--device", "cpu", "--log", str(args.work / "abdoseg.jsonl")]
        theirs = [str(bin_dir / "nnUNetv2_predict"), "-i", str(case_in), "-o", str(args.work / "out_nnunet"),
                  "-d", DATASET, "-tr", "nnUNetTrainer", "-p", plans["plans_name"], "-c", "3d_fullres",
                  "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"]
        t_ours, m_ours = _fresh_rss(ours, env)
        t_theirs, m_theirs = _fresh_rss(theirs, env)
        stages = json.loads((args.work / "abdoseg.jsonl").read_text().splitlines()[-1])["seconds"]
        print(f"| {scan.name} | {t_theirs:.1f} | {t_ours:.1f} | {t_ours / t_theirs:.3f} | {m_theirs:.0f} | "
              f"{m_ours:.0f} | {m_ours / m_theirs:.2f} | {' '.join(f'{k} {v:.1f}' for k, v in stages.items())} |",
              flush=True)
    return 0


def _tree_rss_mb(pid: int) -> float:
    """Summed RSS (MB) of `pid` and its descendants (nnU-Net preprocesses and exports in worker processes)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            rss[int(entry.name)] = int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def _fresh_rss(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB, the process tree summed, sampled every 0.1 s) of `cmd`."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, _tree_rss_mb(proc.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr.read()[-2000:]}")
    return wall, peak


def _parameters(folder: Path) -> int:
    import torch

    weights = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    # nnU-Net's modules reach the same tensor by several names (decoder.encoder.*, all_modules.*): count each once
    unique = {v.data_ptr(): v.numel() for v in weights["network_weights"].values()}
    return sum(unique.values())


if __name__ == "__main__":
    sys.exit(main())
