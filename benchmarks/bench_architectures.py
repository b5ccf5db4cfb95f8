#!/usr/bin/env python3
"""Benchmark: what each seed's architecture costs on this CPU, run by the same pipeline.

    .venv-dev/bin/python benchmarks/bench_architectures.py [--sizes S] [--threads N] [--slices-per-run 4]
                                                           [--systems cobra,vgg13_unet_ds,nnunet2d,hrnet48_ocr]

COBRA net: the shipped fp32 card (abdoseg/weights/abdoseg_coarse.json, trained weights). The 2D systems: the papers'
widths with RANDOM weights (torch's default initialisation, seed 0 — cost does not depend on the values), exported by
abdoseg.networks.onnx_export and composed into a "slices" card at 512x512 (nnunet2d: nnU-Net's CT z-score with
placeholder statistics), written to a temporary folder (never into the repository). Each case is one fresh
`predict.sh` process (OpenVINO, as shipped): cold wall time from exec to exit (runtime open and compile
included), peak RSS (the process's own VmHWM, as it logs it: wait4's ru_maxrss would carry this script's peak
from exporting the networks across fork+exec), the logged stage seconds. `--max-slices N` runs the first N
slices of each volume instead (a quick memory figure: a 2D system's peak is one batch's). Parameters and GMACs
(multiply-adds, the papers' fvcore convention) per network input (a 512x512 slice, or COBRA's canvas) and per case.
Volumes: ../shared/tools/make_bench_volumes.py (S 512x512x134, M x336, L x672; made once into .cache/bench).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_pipeline import cold_run, cpu_model, ensure_volumes  # noqa: E402

SYSTEMS = ("cobra", "vgg13_unet_ds", "nnunet2d", "hrnet48_ocr")
SLICE_HW = (512, 512)


def random_slice_card(arch: str, folder: Path, slices_per_run: int) -> Path:
    """The 2D system `arch` at the paper's width, random weights, as a composed "slices" card in `folder`."""
    import dataclasses

    import onnx
    import torch

    from abdoseg.inference.card import sha256_of
    from abdoseg.inference.graph.slice_graph import compose_slices_with_network
    from abdoseg.networks.onnx_export import slices_onnx_bytes
    from abdoseg.training.slices.data import Intensity
    from abdoseg.training.slices.export import slice_card
    from abdoseg.training.slices.recipes import RECIPES
    from abdoseg.training.slices.train import SliceTrainConfig

    torch.manual_seed(0)
    recipe = RECIPES[arch]
    cfg = SliceTrainConfig(data="-", arch=arch, width=1.0, slice_size=SLICE_HW, slices_per_run=slices_per_run)
    intensity = (Intensity(windows=recipe.windows) if recipe.intensity == "windows"
                 else Intensity(clip=(-958.0, 327.0), mean=82.0, std=136.0))  # placeholder CT statistics
    model = cfg.build(intensity.n_channels).eval()  # nnU-Net planned for 512x512 slices (8 stages)
    draft = slice_card(cfg, intensity, f"{arch}_random")
    network = onnx.load_from_string(slices_onnx_bytes(model, intensity.n_channels, SLICE_HW))
    path = folder / f"{arch}_random.onnx"
    onnx.save(compose_slices_with_network(network, draft), path)
    card = dataclasses.replace(draft, sha256=sha256_of(path),
                               provenance={"warning": "RANDOM weights: for cost benchmarks only"})
    card.save(folder / f"{arch}_random.json")
    return folder / f"{arch}_random.json"


def first_slices(scan: Path, n: int) -> Path:
    """The first `n` slices of `scan` (stored order), written once into .cache/bench_first."""
    import SimpleITK as sitk

    out = ROOT / ".cache" / "bench_first" / scan.name.replace("_0000", f"first{n}_0000")
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.ReadImage(str(scan))[:, :, :n], str(out), True)
    return out


def cost(arch: str) -> tuple[int, float, int]:
    """(parameters, GMACs per network input, inputs per slice: 1 for 2D, 0 for a whole-scan canvas)."""
    from abdoseg.networks.flops import spec_gmacs
    from abdoseg.networks.registry import build, count_parameters, get

    spec = get(arch)
    return count_parameters(build(arch)), spec_gmacs(spec), int(spec.dims == 2)


def main() -> None:
    from abdoseg.inference.card import card_path
    from abdoseg.inference.process.resources import usable_cpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="S")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--slices-per-run", type=int, default=4)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--max-slices", type=int, default=None, help="only the first N slices of each volume")
    a = ap.parse_args()
    threads = a.threads or usable_cpus()
    volumes = ensure_volumes(a.sizes.split(","))
    if a.max_slices:
        volumes = {f"{size}{a.max_slices}": first_slices(scan, a.max_slices) for size, scan in volumes.items()}
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"CPU: {cpu_model()}; {threads} threads, OpenVINO, one cold predict.sh process per case")
    print("cobra: shipped trained weights; 2D systems: the papers' widths, RANDOM weights, "
          f"512x512 slices, {a.slices_per_run} slices per network run")
    head = (f"{'system':14} {'case':8} {'slices':>6} {'cold e2e s':>10} {'peak RSS MB':>11} {'params':>11} "
            f"{'GMACs/input':>11} {'GMACs/case':>10}  stages (s)")
    print(head + "\n" + "-" * len(head))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.systems.split(","):
            card = (str(card_path("flare21-fp32")) if arch == "cobra"
                    else str(random_slice_card(arch, Path(tmp), a.slices_per_run)))
            params, gmacs, per_slice = cost(arch)
            for size, scan in volumes.items():
                run = cold_run(scan, ["--runtime", "openvino", "--card", card, "--threads", str(threads), "--device", "cpu"])
                rec = run["record"]
                n_slices = rec["input_size"][2]
                per_case = gmacs * (n_slices if per_slice else 1)
                stages = " ".join(f"{k} {v:.2f}" for k, v in rec["seconds"].items())
                print(f"{arch:14} bench{size:3} {n_slices:6d} {run['wall']:10.1f} {rec['peak_rss_mb']:11.0f} {params:11,d} "
                      f"{gmacs:11.1f} {per_case:10.0f}  load {rec['model_load_s']:.2f} {stages}", flush=True)


if __name__ == "__main__":
    main()
