"""Tiny fine-stage networks and cards, for fast tests of the fine stage on the CPU (imports torch)."""
from __future__ import annotations

import torch

from abdoseg.inference.fine import FineCard
from abdoseg.inference.fine.card import Architecture
from abdoseg.networks.fine_unet import FineUNet

TINY = Architecture(base_features=4, max_features=8, n_stages=3)


def tiny_card(**kw) -> FineCard:
    return FineCard(name="tiny", weights_file="fine.pt", sha256=None, architecture=TINY, patch_size=(16, 32, 32), **kw)


def biased_network(label: int) -> FineUNet:
    """Random weights, but a head bias so large that every voxel is `label`."""
    torch.manual_seed(0)
    net = FineUNet(TINY)
    with torch.no_grad():
        net.head.bias.zero_()
        net.head.bias[label] = 1e4
    return net
