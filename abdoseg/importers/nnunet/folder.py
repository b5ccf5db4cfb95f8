"""Reading an nnU-Net v2 model folder: its name, dataset.json, plans.json and fold checkpoints, and what is refused.

A results folder is `TRAINER__PLANS__CONFIGURATION` holding dataset.json, plans.json and fold_<k>/checkpoint_final.pth
(nnU-Net's own layout). What the card cannot hold is refused here with one line naming the file and the reason:
region-based labels (several labels per voxel, sigmoid outputs) and normalisations other than CTNormalization.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT = "checkpoint_final.pth"
SUPPORTED_NORMALIZATION = "CTNormalization"


class ImportRefused(ValueError):
    """A model folder that cannot be imported; the message is one line naming the file and the reason."""


@dataclass(frozen=True)
class ModelFolder:
    """An nnU-Net v2 results folder, read and checked (the plans and dataset.json as nnU-Net stores them)."""

    path: Path
    trainer: str
    plans_name: str
    configuration: str
    dataset_json: dict
    plans: dict
    folds: tuple[int, ...]

    def checkpoint(self, fold: int) -> Path:
        return self.path / f"fold_{fold}" / CHECKPOINT


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ImportRefused(f"{path}: missing; an nnU-Net v2 model folder holds dataset.json and plans.json")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImportRefused(f"{path}: not JSON ({e})") from e


def _present_folds(path: Path) -> tuple[int, ...]:
    found = (re.fullmatch(r"fold_(\d+)", p.name) for p in path.iterdir() if (p / CHECKPOINT).is_file())
    return tuple(sorted(int(m.group(1)) for m in found if m))


def _check_labels(dataset_json: dict, path: Path) -> None:
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ImportRefused(f"{path}: no 'labels' (name -> value) in dataset.json")
    if "regions_class_order" in dataset_json or any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise ImportRefused(f"{path}: region-based labels (overlapping regions, sigmoid outputs) are not supported: "
                            "a card holds one label per voxel")


def _check_normalization(plans: dict, configuration: str, path: Path) -> None:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    schemes = PlansManager(plans).get_configuration(configuration).normalization_schemes
    for channel, scheme in enumerate(schemes):
        if scheme != SUPPORTED_NORMALIZATION:
            raise ImportRefused(f"{path}: channel {channel} is normalised with {scheme}; only "
                                f"{SUPPORTED_NORMALIZATION} (CT: clip to percentiles, z-score) is supported")


def read_model_folder(path: Path, folds: tuple[int, ...] | None = None) -> ModelFolder:
    """The model folder at `path`, with `folds` (default: every fold_<k> holding a checkpoint_final.pth)."""
    path = Path(path)
    if not path.is_dir():
        raise ImportRefused(f"{path}: not a folder")
    parts = path.name.split("__")
    if len(parts) != 3 or not all(parts):
        raise ImportRefused(f"{path}: the folder's name is not nnU-Net's TRAINER__PLANS__CONFIGURATION")
    trainer, plans_name, configuration = parts
    dataset_json = _read_json(path / "dataset.json")
    plans = _read_json(path / "plans.json")
    if configuration not in plans.get("configurations", {}):
        raise ImportRefused(f"{path / 'plans.json'}: no configuration {configuration!r} "
                            f"(it has {', '.join(plans.get('configurations', {}))})")
    _check_labels(dataset_json, path / "dataset.json")
    _check_normalization(plans, configuration, path / "plans.json")
    present = _present_folds(path)
    chosen = present if folds is None else tuple(folds)
    if not chosen:
        raise ImportRefused(f"{path}: no fold_<k>/{CHECKPOINT}")
    missing = [f for f in chosen if f not in present]
    if missing:
        raise ImportRefused(f"{path}: no fold_{missing[0]}/{CHECKPOINT} (folds present: {list(present)})")
    return ModelFolder(path, trainer, plans_name, configuration, dataset_json, plans, chosen)

