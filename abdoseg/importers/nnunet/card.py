"""The abdoseg-nnunet card of an imported model folder: nnU-Net's plans and dataset.json values, in its conventions.

Array axes are SimpleITK's GetArrayFromImage axes after the plans' transpose_forward, exactly as plans.json stores
them. docs/nnunet.md describes every field.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version

from abdoseg.importers.nnunet.folder import ModelFolder
from abdoseg.importers.nnunet.network import NetworkShape

FORMAT = "abdoseg-nnunet-card/1"
#: nnUNetPredictor's defaults: windows overlap by half a patch, Gaussian weights with sigma 1/8 of the patch
STEP = 0.5
SIGMA_SCALE = 0.125


@dataclass(frozen=True)
class Exported:
    """What the import measured and wrote, per fold."""

    checkpoint_sha256: dict[int, str]
    onnx: dict[int, str]  # file names beside the card
    mirror_axes: list[int]
    parity: dict  # {"max_abs_logit_diff", "tolerance", "fold"}: the worst fold


def _labels(dataset_json: dict, n_classes: int) -> dict[str, str]:
    """dataset.json's name -> value inverted (nnU-Net's ignore label, not an output, left out)."""
    by_value = {int(v): name for name, v in dataset_json["labels"].items() if int(v) < n_classes}
    return {str(v): by_value[v] for v in sorted(by_value)}


def _normalization(plans: dict, n_channels: int) -> list[dict]:
    props = plans["foreground_intensity_properties_per_channel"]
    return [{"scheme": "CTNormalization", "mean": float(props[str(c)]["mean"]), "std": float(props[str(c)]["std"]),
             "lower": float(props[str(c)]["percentile_00_5"]), "upper": float(props[str(c)]["percentile_99_5"])}
            for c in range(n_channels)]


def _resampling(config: dict) -> dict:
    return {kind: {"fn": config[f"resampling_fn_{key}"], "kwargs": config[f"resampling_fn_{key}_kwargs"]}
            for kind, key in (("data", "data"), ("probabilities", "probabilities"), ("seg", "seg"))}


def make_card(folder: ModelFolder, name: str, shape: NetworkShape, exported: Exported,
              previous_stage: dict | None) -> dict:
    """The card's JSON object."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    config = PlansManager(folder.plans).get_configuration(folder.configuration).configuration  # inheritance resolved
    channels = folder.dataset_json.get("channel_names") or folder.dataset_json["modality"]
    return {
        "format": FORMAT,
        "name": name,
        "configuration": folder.configuration,
        "source": {"folder": folder.path.name, "dataset_name": folder.plans["dataset_name"],
                   "trainer": folder.trainer, "plans_name": folder.plans_name,
                   "nnunetv2_version": version("nnunetv2"),
                   "checkpoint_sha256": {str(k): v for k, v in exported.checkpoint_sha256.items()}},
        "labels": _labels(folder.dataset_json, shape.n_classes),
        "channel_names": {str(k): v for k, v in channels.items()},
        "n_classes": shape.n_classes,
        "in_channels": shape.in_channels,
        "spacing": [float(s) for s in config["spacing"]],
        "transpose_forward": list(folder.plans["transpose_forward"]),
        "transpose_backward": list(folder.plans["transpose_backward"]),
        "normalization": _normalization(folder.plans, len(channels)),
        "patch_size": list(shape.patch_size),
        "step": STEP,
        "sigma_scale": SIGMA_SCALE,
        "mirror_axes": exported.mirror_axes,
        "folds": list(folder.folds),
        "onnx": {str(k): v for k, v in exported.onnx.items()},
        "resampling": _resampling(config),
        "previous_stage": previous_stage,
        "parity": exported.parity,
    }
