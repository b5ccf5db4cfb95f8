"""Make the small real nnU-Net v2 model folders in tests/data/nnunet/ with nnU-Net's own tools.

Run from the repository root with the nnU-Net environment (`make venv-nnunet`):

    .venv-nnunet/bin/python tests/data/nnunet/make_models.py [--work build/nnunet]

Steps (each nnU-Net command is printed as it runs):
1. an nnU-Net raw dataset, Dataset501_FLARE21Pair, from the two bundled scans and their FLARE21 labels;
2. `nnUNetv2_extract_fingerprint` and `nnUNetv2_plan_experiment`: the default plans (nnUNetPlans, kept as
   nnUNetPlans.json: the full-size 3d_fullres network the import must also take);
3. custom plans, nnUNetTinyPlans (nnU-Net's documented custom-plans format, `inherits_from`): the same spacings,
   normalisation and resampling, a 4-stage network of at most 32 features and small patches; `3d_lowres` at twice the
   3d_fullres spacing (the planner drops it for scans this small) with `3d_cascade_fullres` after it;
4. `nnUNetv2_preprocess` for the four configurations; a splits_final.json whose folds train and validate on both
   scans (two scans are all there is; the folds differ by their random initialisation and sampling);
5. training with nnU-Net's own trainer class, `nnUNetTrainer`, on the CPU, its schedule shortened on the instance
   (SCHEDULE below). nnUNetv2_train has no flag for the schedule, and a subclass would put a trainer name in the
   checkpoint that nnUNetPredictor looks up through every trainer module, one of which imports torchvision, which
   does not load beside the CPU torch. `3d_lowres` is validated as nnU-Net does after training: that writes the
   `predicted_next_stage` segmentations the cascade trains on;
6. each fold's checkpoint_final.pth kept without its optimizer state (the model folders can predict, not resume
   training), and dataset.json, plans.json, dataset_fingerprint.json beside them;
7. `abdoseg import-nnunet` of each folder into cards/tiny_<configuration>.json (the cascade's with --previous-stage).

The data are the bundled scans (TotalSegmentator test files, Apache-2.0) and their TotalSegmentator pseudo-labels:
these models inherit that licence. They are test data for the importer and the runtime, not models to use.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
SCANS = ROOT / "tests" / "data" / "flare21"
DATASET_ID = 501
DATASET = "Dataset501_FLARE21Pair"
PLANS = "nnUNetTinyPlans"
TRAINER = "nnUNetTrainer"
CASES = ("abdpelvis3mm", "upperabd1mm")
THREADS = 2
#: configuration -> {fold: (epochs, iterations per epoch)}, trained in this order (the cascade needs 3d_lowres first);
#: on the shared 2-core machine one 3D iteration (batch 2, patch 32x64x64, augmentation in the same process) took 2-10 s
SCHEDULE: dict[str, dict[int, tuple[int, int]]] = {
    "3d_fullres": {0: (3, 25), 1: (2, 25)},
    "2d": {0: (3, 25)},
    "3d_lowres": {0: (3, 25)},
    "3d_cascade_fullres": {0: (3, 25)},
}
DATASET_JSON = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "liver": 1, "kidneys": 2, "spleen": 3, "pancreas": 4},
    "numTraining": len(CASES),
    "file_ending": ".nii.gz",
    "name": "FLARE21Pair",
    "description": "The two bundled abdominal CT scans with FLARE21 labels (TotalSegmentator pseudo-labels)",
    "licence": "Apache-2.0 (TotalSegmentator test files and pseudo-labels)",
}


def _tiny_3d_arch(arch: dict) -> dict:
    kwargs = dict(arch["arch_kwargs"], n_stages=4, features_per_stage=[8, 16, 32, 32],
                  kernel_sizes=[[3, 3, 3]] * 4, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                  n_conv_per_stage=[2, 2, 2, 2], n_conv_per_stage_decoder=[2, 2, 2])
    return dict(arch, arch_kwargs=kwargs)


def _tiny_2d_arch(arch: dict) -> dict:
    kwargs = dict(arch["arch_kwargs"], n_stages=4, features_per_stage=[8, 16, 32, 32],
                  kernel_sizes=[[3, 3]] * 4, strides=[[1, 1], [2, 2], [2, 2], [2, 2]],
                  n_conv_per_stage=[2, 2, 2, 2], n_conv_per_stage_decoder=[2, 2, 2])
    return dict(arch, arch_kwargs=kwargs)


def tiny_plans(default: dict) -> dict:
    """nnUNetTinyPlans from the planner's nnUNetPlans: same spacings, normalisation and resampling, a small network."""
    plans = copy.deepcopy(default)
    plans["plans_name"] = PLANS
    full, flat = plans["configurations"]["3d_fullres"], plans["configurations"]["2d"]
    full.update(data_identifier=f"{PLANS}_3d_fullres", patch_size=[32, 64, 64], batch_size=2,
                architecture=_tiny_3d_arch(full["architecture"]))
    flat.update(data_identifier=f"{PLANS}_2d", patch_size=[128, 128], batch_size=4,
                architecture=_tiny_2d_arch(flat["architecture"]))
    low_spacing = [2 * s for s in full["spacing"]]
    plans["configurations"]["3d_lowres"] = {
        "inherits_from": "3d_fullres", "data_identifier": f"{PLANS}_3d_lowres", "spacing": low_spacing,
        "median_image_size_in_voxels": [round(n / 2) for n in full["median_image_size_in_voxels"]],
        "next_stage": "3d_cascade_fullres"}
    plans["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    return plans


def run(cmd: list[str], env: dict[str, str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)


def make_raw(raw: Path) -> None:
    folder = raw / DATASET
    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for case in CASES:
        shutil.copy2(SCANS / "imagesTr" / f"{case}_0000.nii.gz", folder / "imagesTr")
        shutil.copy2(SCANS / "labelsTr" / f"{case}.nii.gz", folder / "labelsTr")
    (folder / "dataset.json").write_text(json.dumps(DATASET_JSON, indent=2))


def plan_and_preprocess(work: Path, env: dict[str, str]) -> None:
    bin_dir = Path(sys.executable).parent
    run([str(bin_dir / "nnUNetv2_extract_fingerprint"), "-d", str(DATASET_ID), "-np", "1"], env)
    # nnUNet_n_proc_DA=0 (training's single-threaded augmentation) breaks the planner's torch.set_num_threads
    run([str(bin_dir / "nnUNetv2_plan_experiment"), "-d", str(DATASET_ID)], dict(env, nnUNet_n_proc_DA="1"))
    pre = work / "preprocessed" / DATASET
    default = json.loads((pre / "nnUNetPlans.json").read_text())
    (pre / f"{PLANS}.json").write_text(json.dumps(tiny_plans(default), indent=2))
    configs = list(SCHEDULE)
    run([str(bin_dir / "nnUNetv2_preprocess"), "-d", str(DATASET_ID), "-plans_name", PLANS, "-c", *configs,
         "-np", *["1"] * len(configs)], env)
    splits = [{"train": list(CASES), "val": list(CASES)} for _ in range(2)]
    (pre / "splits_final.json").write_text(json.dumps(splits, indent=2))


def train(configuration: str, fold: int, epochs: int, iterations: int) -> None:
    """nnU-Net's nnUNetTrainer on the CPU with a short schedule: what `nnUNetv2_train 501 CONFIGURATION FOLD -p
    nnUNetTinyPlans -device cpu` does (its own get_trainer_from_args), with the schedule set on the instance."""
    import numpy as np
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    print(f"+ train {TRAINER} {PLANS} {configuration} fold {fold}: {epochs} epochs x {iterations} iterations",
          flush=True)
    torch.manual_seed(fold)
    np.random.seed(fold)
    trainer = get_trainer_from_args(str(DATASET_ID), configuration, fold, TRAINER, PLANS, device=torch.device("cpu"))
    trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = epochs, iterations, 1
    trainer.run_training()
    if trainer.configuration_manager.next_stage_names:
        trainer.perform_actual_validation(False)


def strip_checkpoint(src: Path, dst: Path) -> None:
    """checkpoint_final.pth without optimizer and grad-scaler state: what nnUNetPredictor reads, and the log."""
    import torch

    checkpoint = torch.load(src, map_location="cpu", weights_only=False)
    checkpoint.pop("optimizer_state", None)
    checkpoint["grad_scaler_state"] = None
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, dst)


def collect(work: Path, out: Path, configurations: list[str]) -> None:
    shutil.copy2(work / "preprocessed" / DATASET / "nnUNetPlans.json", out / "nnUNetPlans.json")
    for configuration in configurations:
        folds = SCHEDULE[configuration]
        name = f"{TRAINER}__{PLANS}__{configuration}"
        src, dst = work / "results" / DATASET / name, out / DATASET / name
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        for part in ("dataset.json", "plans.json", "dataset_fingerprint.json"):
            shutil.copy2(src / part, dst / part)
        for fold in folds:
            strip_checkpoint(src / f"fold_{fold}" / "checkpoint_final.pth",
                             dst / f"fold_{fold}" / "checkpoint_final.pth")


def import_cards(out: Path, configurations: list[str]) -> None:
    """`abdoseg import-nnunet` of each model folder into out/cards/tiny_<configuration>.json (+ ONNX per fold)."""
    sys.path.insert(0, str(ROOT))
    from abdoseg.importers.nnunet.cli import main as import_nnunet

    for configuration in configurations:
        argv = [str(out / DATASET / f"{TRAINER}__{PLANS}__{configuration}"),
                "--out", str(out / "cards" / f"tiny_{configuration}")]
        if configuration == "3d_cascade_fullres":
            argv += ["--previous-stage", str(out / "cards" / "tiny_3d_lowres.json")]
        print("+ abdoseg import-nnunet", " ".join(argv), flush=True)
        if import_nnunet(argv) != 0:
            raise SystemExit(f"import of {configuration} failed")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=ROOT / "build" / "nnunet", help="nnU-Net's raw/preprocessed/results")
    p.add_argument("--out", type=Path, default=HERE, help="where the model folders are written")
    p.add_argument("--configurations", nargs="+", choices=list(SCHEDULE), default=list(SCHEDULE),
                   help="train these (in SCHEDULE's order; 3d_cascade_fullres needs 3d_lowres trained before)")
    p.add_argument("--replan", action="store_true", help="start again from the raw dataset (done when no plans)")
    args = p.parse_args()
    work = args.work.resolve()
    replan = args.replan or not (work / "preprocessed" / DATASET / f"{PLANS}.json").is_file()
    env = dict(os.environ, nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
               nnUNet_results=str(work / "results"), nnUNet_n_proc_DA="0", nnUNet_def_n_proc="1",
               nnUNet_compile="false", OMP_NUM_THREADS=str(THREADS))
    os.environ.update(env)  # read by nnunetv2.paths at import, and by the trainer's data loading
    if replan:
        shutil.rmtree(work, ignore_errors=True)
        make_raw(work / "raw")
        plan_and_preprocess(work, env)
    import torch

    torch.set_num_threads(THREADS)
    configurations = [c for c in SCHEDULE if c in args.configurations]
    for configuration in configurations:
        for fold, (epochs, iterations) in SCHEDULE[configuration].items():
            if not (work / "results" / DATASET / f"{TRAINER}__{PLANS}__{configuration}" / f"fold_{fold}" /
                    "checkpoint_final.pth").is_file():  # a fold already trained is kept
                train(configuration, fold, epochs, iterations)
    collect(work, args.out.resolve(), configurations)
    import_cards(args.out.resolve(), configurations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
