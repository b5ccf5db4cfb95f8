"""The fold's network rebuilt as nnU-Net builds it, and its checkpoint loaded.

nnUNetTrainer.build_network_architecture calls nnunetv2's get_network_from_plans with the plans' architecture class
(dynamic_network_architectures) and kwargs; the input channels come from determine_num_input_channels (the cascade
adds one channel per foreground label) and the outputs from the label manager. The trainer class itself is not
looked up: nnU-Net's lookup imports every trainer module, and one of them needs torchvision. A trainer that builds
another network than its plans say is caught by the strict state-dict load.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from abdoseg.importers.nnunet.folder import ImportRefused, ModelFolder


@dataclass(frozen=True)
class NetworkShape:
    """What the card and the export need to know of the network."""

    in_channels: int
    n_classes: int
    patch_size: tuple[int, ...]


def network_shape(folder: ModelFolder) -> NetworkShape:
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(folder.plans)
    config = plans.get_configuration(folder.configuration)
    in_channels = determine_num_input_channels(plans, config, folder.dataset_json)
    n_classes = plans.get_label_manager(folder.dataset_json).num_segmentation_heads
    return NetworkShape(in_channels, n_classes, tuple(int(n) for n in config.patch_size))


def trace_size(folder: ModelFolder) -> tuple[int, ...]:
    """A small input the network takes: per axis, twice the product of its encoder's strides (instance norm needs
    more than one voxel at the bottleneck)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    config = PlansManager(folder.plans).get_configuration(folder.configuration)
    size = np.ones(len(config.patch_size), dtype=int)
    for stride in config.network_arch_init_kwargs["strides"]:
        size *= np.broadcast_to(np.asarray(stride, dtype=int), size.shape)  # a stage's stride: one int or per axis
    return tuple(2 * int(n) for n in size)


def build_network(folder: ModelFolder) -> nn.Module:
    """The configuration's network, deep supervision off (the full-resolution head only), not initialised."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    config = PlansManager(folder.plans).get_configuration(folder.configuration)
    shape = network_shape(folder)
    return get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                  config.network_arch_init_kwargs_req_import, shape.in_channels, shape.n_classes,
                                  allow_init=False, deep_supervision=False)


def load_checkpoint(folder: ModelFolder, fold: int) -> dict:
    path = folder.checkpoint(fold)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many kinds for a damaged or foreign file
        raise ImportRefused(f"{path}: not a torch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise ImportRefused(f"{path}: no 'network_weights'; not an nnU-Net v2 checkpoint")
    return checkpoint


def fold_network(folder: ModelFolder, fold: int, checkpoint: dict) -> nn.Module:
    """The network of one fold in eval mode, its weights loaded strictly."""
    network = build_network(folder)
    weights = {k.removeprefix("module.").removeprefix("_orig_mod."): v
               for k, v in checkpoint["network_weights"].items()}
    try:
        network.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ImportRefused(f"{folder.checkpoint(fold)}: its weights do not fit the network the plans describe "
                            f"({first})") from e
    return network.eval()


def mirror_axes(checkpoint: dict) -> list[int]:
    """The checkpoint's inference_allowed_mirroring_axes (none recorded: no mirroring)."""
    axes = checkpoint.get("inference_allowed_mirroring_axes")
    return [int(a) for a in axes] if axes else []
