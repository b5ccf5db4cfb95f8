"""nnU-Net's 2D U-Net (seed 003) as planned for a 512×512 patch: the v1 `Generic_UNet` layout.

nnU-Net's default 2D plan for 512×512 CT slices pools while the feature map is at least 8 pixels wide
(512 → 4 after 7 poolings), so it has 8 resolutions; features start at 32 and double per resolution, capped
at 480 (nnU-Net v1's 2D cap): 32, 64, 128, 256, 480, 480, 480, 480. Every resolution has two
conv3×3 (bias) → InstanceNorm (affine) → LeakyReLU(0.01); downsampling is the stride-2 first conv of a
stage; upsampling a 2×2 stride-2 transposed conv without bias onto the skip's width, followed by
concatenation [upsampled, skip] and two convs. Deep supervision: a bias-free 1×1 head on every decoder stage
(7 outputs, full resolution first). 41,268,192 parameters at 5 classes, width 1.
"""
from __future__ import annotations

import torch
from torch import nn

PAPER_PARAMETERS = 41_268_192
N_STAGES = 8
BASE_FEATURES = 32
MAX_FEATURES = 480


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1),
        nn.InstanceNorm2d(c_out, eps=1e-5, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


def stage_features(width: float = 1.0, n_stages: int = N_STAGES) -> list[int]:
    """Features per resolution: base·2^s capped at the 2D maximum, both scaled by `width`."""
    base, cap = max(1, round(BASE_FEATURES * width)), max(1, round(MAX_FEATURES * width))
    return [min(base * 2**s, cap) for s in range(n_stages)]


class NnUNet2D(nn.Module):
    """Input [N, C, H, W] with H, W multiples of 2^(n_stages−1) → logits [N, n_classes, H, W]
    (or, with `deep_supervision`, the list of every decoder stage's logits, full resolution first)."""

    def __init__(self, n_classes: int = 5, width: float = 1.0, in_channels: int = 1, n_stages: int = N_STAGES) -> None:
        super().__init__()
        f = stage_features(width, n_stages)
        self.deep_supervision = True
        self.encoder = nn.ModuleList(
            nn.Sequential(_conv(in_channels if s == 0 else f[s - 1], f[s], 1 if s == 0 else 2), _conv(f[s], f[s]))
            for s in range(n_stages)
        )
        self.up = nn.ModuleList(nn.ConvTranspose2d(f[s + 1], f[s], 2, stride=2, bias=False) for s in range(n_stages - 1))
        self.decoder = nn.ModuleList(nn.Sequential(_conv(2 * f[s], f[s]), _conv(f[s], f[s])) for s in range(n_stages - 1))
        self.heads = nn.ModuleList(nn.Conv2d(f[s], n_classes, 1, bias=False) for s in range(n_stages - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        outputs = []
        for s in reversed(range(len(self.decoder))):
            x = self.decoder[s](torch.cat([self.up[s](x), skips.pop()], dim=1))
            if self.deep_supervision or s == 0:
                outputs.append(self.heads[s](x))
        return outputs[::-1] if self.deep_supervision else outputs[-1]


def plan_stages(patch: int = 512, min_size: int = 4) -> int:
    """Resolutions nnU-Net plans for a square patch: pool while the map stays >= 2·`min_size` (512 → 8)."""
    stages = 1
    while patch % 2 == 0 and patch // 2 >= min_size:
        patch, stages = patch // 2, stages + 1
    return stages


def build(n_classes: int = 5, width: float = 1.0, in_channels: int = 1, patch: int = 512) -> NnUNet2D:
    """nnU-Net's 2D U-Net planned for `patch`×`patch` slices (512: the paper's) at `width` × its feature counts."""
    return NnUNet2D(n_classes, width, in_channels, plan_stages(patch))
