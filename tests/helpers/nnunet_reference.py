"""nnU-Net itself, for agreement tests and the benchmark (needs nnunetv2 and torch: the nnU-Net environment).

- `random_model_folder`: an nnU-Net v2 results folder (dataset.json, plans.json, fold_k/checkpoint_final.pth) whose
  network nnU-Net's own trainer class builds from the plans, with seeded random weights (any plans: a full-size one
  for timing);
- `import_card`: the folder as an nnU-Net card with ONNX per fold: `abdoseg import-nnunet` where it exists, else the
  card contract written here from the same plans (docs/nnunet.md);
- `nnunet_labels`: nnUNetPredictor's label map for a scan file (same folds; mirroring on or off).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

TRAINER = "nnUNetTrainer"


def _network(plans: dict, dataset: dict, configuration: str):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    config = manager.get_configuration(configuration)
    n_in = determine_num_input_channels(manager, config, dataset)
    n_out = manager.get_label_manager(dataset).num_segmentation_heads
    return nnUNetTrainer.build_network_architecture(manager, config, n_in, n_out, enable_deep_supervision=False)


def random_model_folder(out: Path, plans: dict, dataset: dict, configuration: str, folds=(0,)) -> Path:
    """Write TRAINER__PLANS__CONFIGURATION/ under `out` with seeded random weights per fold; return its path. The
    mirroring axes are nnUNetTrainer's: every spatial axis of the patch."""
    import torch

    mirror_axes = (0, 1) if configuration == "2d" else (0, 1, 2)

    folder = Path(out) / f"{TRAINER}__{plans['plans_name']}__{configuration}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    for fold in folds:
        torch.manual_seed(fold)
        net = _network(plans, dataset, configuration)
        checkpoint = {"network_weights": net.state_dict(), "trainer_name": TRAINER,
                      "init_args": {"configuration": configuration, "fold": fold},
                      "inference_allowed_mirroring_axes": tuple(mirror_axes)}
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def import_card(folder: Path, out: Path, previous_stage: Path | None = None) -> Path:
    """The card of nnU-Net results `folder` at out.json (+ out.fold_k.onnx): abdoseg import-nnunet if present."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from abdoseg.command import SUBCOMMANDS

    if "import-nnunet" in SUBCOMMANDS:
        cmd = [sys.executable, "-m", "abdoseg", "import-nnunet", str(folder), "--out", str(out)]
        if previous_stage is not None:
            cmd += ["--previous-stage", str(previous_stage)]
        root = Path(__file__).resolve().parents[2]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
        subprocess.run(cmd, check=True, env=env)
        return out.with_suffix(".json")
    return _contract_card(Path(folder), out, previous_stage)


def _contract_card(folder: Path, out: Path, previous_stage: Path | None) -> Path:
    """The card contract written from the folder's plans, each fold exported with torch (TorchScript exporter)."""
    import torch

    plans = json.loads((folder / "plans.json").read_text())
    dataset = json.loads((folder / "dataset.json").read_text())
    configuration = folder.name.split("__")[-1]
    config = _resolved_configuration(plans, configuration)
    folds = sorted(int(p.name.split("_")[1]) for p in folder.glob("fold_*"))
    onnx_files = {}
    for fold in folds:
        checkpoint = torch.load(folder / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu",
                                weights_only=False)
        net = _network(plans, dataset, configuration)
        net.load_state_dict(checkpoint["network_weights"])
        n_in = next(iter(net.parameters())).shape[1]
        onnx_files[str(fold)] = f"{out.name}.fold_{fold}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net.eval(), (torch.zeros(1, n_in, *config["patch_size"]),),
                              str(out.parent / onnx_files[str(fold)]), input_names=["image"],
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    props = plans["foreground_intensity_properties_per_channel"]
    labels = {str(v): k for k, v in dataset["labels"].items()}
    card = {
        "format": "abdoseg-nnunet-card/1", "name": out.name, "configuration": configuration,
        "source": {"folder": folder.name, "plans_name": plans["plans_name"], "trainer": TRAINER},
        "labels": labels, "channel_names": dataset["channel_names"], "n_classes": len(labels),
        "in_channels": n_in, "spacing": config["spacing"],
        "transpose_forward": plans["transpose_forward"], "transpose_backward": plans["transpose_backward"],
        "normalization": [{"scheme": "CTNormalization", "mean": props[c]["mean"], "std": props[c]["std"],
                           "lower": props[c]["percentile_00_5"], "upper": props[c]["percentile_99_5"]}
                          for c in sorted(props, key=int)],
        "patch_size": config["patch_size"], "step": 0.5, "sigma_scale": 0.125,
        "mirror_axes": list(checkpoint.get("inference_allowed_mirroring_axes") or []),
        "folds": folds, "onnx": onnx_files,
        "resampling": {kind: {"fn": config[f"resampling_fn_{kind}"], "kwargs": config[f"resampling_fn_{kind}_kwargs"]}
                       for kind in ("data", "probabilities", "seg")},
        "previous_stage": None if previous_stage is None else
        {"configuration": "3d_lowres", "card": os.path.relpath(previous_stage, out.parent)},
        "parity": None,
    }
    path = out.with_suffix(".json")
    path.write_text(json.dumps(card, indent=1))
    return path


def _resolved_configuration(plans: dict, configuration: str) -> dict:
    """A configuration's plans entry with `inherits_from` resolved (as nnU-Net's PlansManager does)."""
    entry = dict(plans["configurations"][configuration])
    parent = entry.pop("inherits_from", None)
    return {**_resolved_configuration(plans, parent), **entry} if parent else entry


def nnunet_labels(folder: Path, scan: Path, folds, mirroring: bool, out_dir: Path,
                  prev_stage: Path | None = None) -> np.ndarray:
    """nnUNetPredictor (CPU) on one scan file: its label map in the scan's stored (z, y, x) order (written into
    `out_dir`; `prev_stage`: the previous stage's label map of this scan, for a cascade)."""
    import SimpleITK as sitk
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), tuple(folds), "checkpoint_final.pth")
    out_dir = Path(out_dir)  # a temporary folder: never beside the input
    out_dir.mkdir(parents=True, exist_ok=True)
    seg_dir = None if prev_stage is None else str(Path(prev_stage).parent)  # nnU-Net saves its arguments as JSON
    predictor.predict_from_files_sequential([[str(scan)]], [str(out_dir / Path(scan).name.replace("_0000.nii.gz", ""))],
                                            save_probabilities=False, overwrite=True,
                                            folder_with_segs_from_prev_stage=seg_dir)
    result = out_dir / Path(scan).name.replace("_0000.nii.gz", ".nii.gz")
    return sitk.GetArrayFromImage(sitk.ReadImage(str(result)))
