"""The fine network: a plain 3D U-Net in the nnU-Net style (imports torch).

Per resolution two 3×3×3 convolutions, each followed by instance norm (affine) and leaky ReLU (slope 0.01);
downsampling by a stride-2 first convolution; upsampling by a 2×2×2 stride-2 transposed convolution,
concatenation with the skip, two convolutions; a 1×1×1 head on the full-resolution decoder output.
Features base·2^s capped at `max_features` (nnU-Net: 32 … 320, 5 resolutions for 3D). No deep supervision.
Input [N, C, D, H, W] with D, H, W multiples of 2^(n_stages−1); output logits [N, n_classes, D, H, W].
`build_network` builds the card's architecture: this U-Net, or the coarse model's network ("cobra").
"""
from __future__ import annotations

import torch
from torch import nn

from abdoseg.inference.fine.card import Architecture


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1),
        nn.InstanceNorm3d(c_out, eps=1e-5, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class FineUNet(nn.Module):
    """See the module docstring; built from the card's `Architecture`."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        f = arch.features
        self.arch = arch
        self.encoder = nn.ModuleList(
            nn.Sequential(_conv(arch.in_channels if s == 0 else f[s - 1], f[s], 1 if s == 0 else 2), _conv(f[s], f[s]))
            for s in range(arch.n_stages)
        )
        self.up = nn.ModuleList(nn.ConvTranspose3d(f[s + 1], f[s], 2, stride=2) for s in range(arch.n_stages - 1))
        self.decoder = nn.ModuleList(
            nn.Sequential(_conv(2 * f[s], f[s]), _conv(f[s], f[s])) for s in range(arch.n_stages - 1)
        )
        self.head = nn.Conv3d(f[0], arch.n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        for s in reversed(range(len(self.decoder))):
            x = self.decoder[s](torch.cat([self.up[s](x), skips.pop()], dim=1))
        return self.head(x)


def build_network(arch: Architecture) -> nn.Module:
    """The fine network the card's architecture names: FineUNet ("unet"), or the coarse model's own network
    ("cobra": abdoseg.networks.cobra_unet.CobraUNet with a head of the card's classes, so the coarse model's weights can
    initialise it; eval mode keeps its BatchNorm statistics)."""
    if arch.kind == "unet":
        return FineUNet(arch)
    from abdoseg.networks.cobra_unet import CobraUNet

    net = CobraUNet(dropout=0.0, frozen_norm=True)
    net.head = nn.Conv3d(net.head.in_channels, arch.n_classes, 1)
    return net
