"""nnU-Net v2 test model folders: the committed ones (tests/data/nnunet/, trained with nnU-Net's own tools) and
randomly initialised ones written from any plans, as nnUNetTrainer saves them (no training needed)."""
from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import DATA

NNUNET_DATA = DATA / "nnunet"
DATASET = NNUNET_DATA / "Dataset501_FLARE21Pair"
TINY = "nnUNetTrainer__nnUNetTinyPlans__"
#: the planner's own plans for the two bundled scans (nnUNetv2_plan_experiment): a 30.8 M-parameter 3d_fullres
DEFAULT_PLANS = NNUNET_DATA / "nnUNetPlans.json"


def model_folder(configuration: str) -> Path:
    """The committed tiny model folder of a configuration (3d_fullres, 2d, 3d_lowres, 3d_cascade_fullres)."""
    return DATASET / f"{TINY}{configuration}"


def random_model_folder(root: Path, plans: dict, configuration: str, dataset_json: dict, folds=(0,),
                        trainer: str = "nnUNetTrainer", mirror_axes=(0, 1, 2)) -> Path:
    """A results folder TRAINER__PLANS__CONFIGURATION whose folds hold randomly initialised networks, saved with the
    checkpoint keys nnUNetTrainer.save_checkpoint writes (what nnUNetPredictor reads)."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    config = manager.get_configuration(configuration)
    folder = root / f"{trainer}__{plans['plans_name']}__{configuration}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    for fold in folds:
        torch.manual_seed(fold)
        network = get_network_from_plans(
            config.network_arch_class_name, config.network_arch_init_kwargs,
            config.network_arch_init_kwargs_req_import, determine_num_input_channels(manager, config, dataset_json),
            manager.get_label_manager(dataset_json).num_segmentation_heads, allow_init=True, deep_supervision=True)
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({"network_weights": network.state_dict(), "trainer_name": trainer,
                    "init_args": {"plans": plans, "configuration": configuration, "fold": fold,
                                  "dataset_json": dataset_json},
                    "inference_allowed_mirroring_axes": tuple(mirror_axes), "current_epoch": 0},
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder
