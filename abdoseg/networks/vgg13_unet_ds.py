"""U-Net with a VGG-13 encoder and multi-stage deep supervision (seed 002).

The paper fixes the encoder: four VGG-13-BN blocks ([conv3×3-BN-ReLU]×2, max-pool; 64, 128, 256, 512
channels) and the fifth VGG block (2 × conv3×3 512) as centre at 1/16; it leaves the decoder and the deep
supervision open. Choices made here (30,001,113 parameters at 5 classes, 1 input channel, width 1:
−0.48 % of the paper's 30,146,777; ≈196 G multiply-adds per 512×512 slice against its 208.1 GFLOPs):
- symmetric decoder: one block per encoder block, five in all. The first mirrors the centre
  (2 × conv3×3-BN-ReLU, 512, at 1/16); each of the other four upsamples by a stride-2 transposed conv onto
  the skip's width (4×4 kernel from the 512-channel levels, 2×2 below), concatenates [upsampled, skip] and
  applies 2 × conv3×3-BN-ReLU at the skip's width;
- deep supervision: a 1×1 head (with bias) on each of the five decoder blocks, logits at their own
  resolution (1, 1/2, 1/4, 1/8, 1/16 of the input), full resolution first.
All convolutions keep their bias, as torchvision's VGG-13-BN does.
"""
from __future__ import annotations

import torch
from torch import nn

PAPER_PARAMETERS = 30_146_777
ENCODER = (64, 128, 256, 512)
CENTRE = 512


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


def _up(c_in: int, c_out: int, kernel: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=(kernel - 2) // 2)


class VGG13UNetDS(nn.Module):
    """Input [N, C, H, W] (H, W multiples of 16) → logits [N, n_classes, H, W]; with `deep_supervision`,
    the five decoder blocks' logits, full resolution first."""

    def __init__(self, n_classes: int = 5, width: float = 1.0, in_channels: int = 1) -> None:
        super().__init__()
        enc = [max(1, round(c * width)) for c in ENCODER]
        centre = max(1, round(CENTRE * width))
        self.deep_supervision = True
        self.encoder = nn.ModuleList(_double_conv(c_in, c) for c_in, c in zip([in_channels, *enc[:-1]], enc))
        self.pool = nn.MaxPool2d(2)
        self.centre = _double_conv(enc[-1], centre)
        self.mirror = _double_conv(centre, centre)
        ups_in = [centre, *enc[:0:-1]]  # 512 (mirror), 512, 256, 128 at width 1
        self.up = nn.ModuleList(_up(c_in, c, 4 if c_in >= centre else 2) for c_in, c in zip(ups_in, enc[::-1]))
        self.decoder = nn.ModuleList(_double_conv(2 * c, c) for c in enc[::-1])
        self.heads = nn.ModuleList(nn.Conv2d(c, n_classes, 1) for c in [centre, *enc[::-1]])

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.mirror(self.centre(x))
        outputs = [self.heads[0](x)] if self.deep_supervision else []
        for up, block, head in zip(self.up, self.decoder, self.heads[1:]):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
            if self.deep_supervision:
                outputs.append(head(x))
        return outputs[::-1] if self.deep_supervision else self.heads[-1](x)


def build(n_classes: int = 5, width: float = 1.0, in_channels: int = 1) -> VGG13UNetDS:
    """The VGG-13 U-Net with deep supervision at `width` × its channel counts."""
    return VGG13UNetDS(n_classes, width, in_channels)
