"""COBRA-style 3D U-Net (436,982 parameters) for whole-scan abdominal CT segmentation.

Input ``[N, 2, 96, 192, 192]`` (two HU windows in [0, 1]); output logits ``[N, 6, 96, 192, 192]``
(0 air, 1 body, 2 liver, 3 kidneys, 4 spleen, 5 pancreas). Fully convolutional: any input whose
``(D, H, W)`` is a multiple of 16 works, which is what training on crops relies on.
"""
from __future__ import annotations

import torch
from torch import nn

from abdoseg.inference.card import SlabTail

N_CLASSES = 6
N_CHANNELS = 2
EXPECTED_PARAMETERS = 436_982
#: Where the exported graph may be cut so that its full-resolution tail (up0, final, head) runs in z-slabs
#: (abdoseg.inference.graph.staged): dec1's output, at half resolution; the tail's only z-mixing is final's 3-tap conv,
#: so one half-resolution slice of context (2 full-resolution slices) on each side gives exact labels.
SLAB_TAIL = SlabTail(cut="net//dec1/Add_output_0", z_scale=2, halo=1, slab=12)


def _conv_bn_relu(c_in: int, c_out: int, kernel: tuple[int, int, int] | int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, kernel), nn.BatchNorm3d(c_out), nn.ReLU(inplace=True))


class InputStage(nn.Module):
    """Stride-2 downsampling with factorised 7-tap convs (z, then y, then x), then BN + ReLU + Dropout3d."""

    def __init__(self, c_in: int = N_CHANNELS, c_out: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv3d(c_in, c_out, (7, 1, 1), stride=(2, 1, 1), padding=(3, 0, 0)),
            nn.Conv3d(c_out, c_out, (1, 7, 1), stride=(1, 2, 1), padding=(0, 3, 0)),
            nn.Conv3d(c_out, c_out, (1, 1, 7), stride=(1, 1, 2), padding=(0, 0, 3)),
        )
        self.post = nn.Sequential(nn.BatchNorm3d(c_out), nn.ReLU(inplace=True), nn.Dropout3d(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.convs(x))


class Bottleneck(nn.Module):
    """Residual bottleneck: 1×1×1 squeeze to ``c_in // factor``, asymmetric (3,1,1)(1,3,1)(1,1,3) convs,
    one BN + ReLU after the three, 1×1×1 expand to ``c_out``; the residual path is a 1×1×1 conv + BN + ReLU
    when the channel count changes, else identity."""

    def __init__(self, c_in: int, c_out: int, factor: int) -> None:
        super().__init__()
        mid = c_in // factor
        self.squeeze = _conv_bn_relu(c_in, mid)
        self.spatial = nn.Sequential(
            nn.Conv3d(mid, mid, (3, 1, 1), padding=(1, 0, 0)),
            nn.Conv3d(mid, mid, (1, 3, 1), padding=(0, 1, 0)),
            nn.Conv3d(mid, mid, (1, 1, 3), padding=(0, 0, 1)),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
        )
        self.expand = _conv_bn_relu(mid, c_out)
        self.residual: nn.Module = _conv_bn_relu(c_in, c_out) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.spatial(self.squeeze(x))) + self.residual(x)


class Upsample(nn.Module):
    """Bottlenecked ×2 upsampling keeping ``channels``: 1×1×1 squeeze, 2×2×2 stride-2 transposed conv, 1×1×1 expand."""

    def __init__(self, channels: int, factor: int) -> None:
        super().__init__()
        mid = channels // factor
        self.body = nn.Sequential(
            _conv_bn_relu(channels, mid),
            nn.ConvTranspose3d(mid, mid, 2, stride=2),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            _conv_bn_relu(mid, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class CobraUNet(nn.Module):
    """The whole-scan segmentation network (see module docstring for shapes)."""

    def __init__(self, dropout: float = 0.1, frozen_norm: bool = False) -> None:
        super().__init__()
        self.frozen_norm = frozen_norm  # BatchNorms stay in eval mode (fine-tuning a warm start)
        self.stem = InputStage(dropout=dropout)
        self.enc1 = Bottleneck(16, 32, 2)
        self.enc2 = Bottleneck(32, 64, 2)
        self.enc3 = Bottleneck(64, 128, 4)
        self.base = Bottleneck(128, 256, 4)
        self.pool = nn.MaxPool3d(2)
        self.up3 = Upsample(256, 4)
        self.dec3 = Bottleneck(384, 128, 4)
        self.up2 = Upsample(128, 4)
        self.dec2 = Bottleneck(192, 64, 4)
        self.up1 = Upsample(64, 4)
        self.dec1 = Bottleneck(96, 32, 2)
        self.up0 = Upsample(32, 2)
        self.final = Bottleneck(32, 32, 2)
        self.head = nn.Conv3d(32, N_CLASSES, 1)

    def train(self, mode: bool = True) -> "CobraUNet":
        """As nn.Module.train; with `frozen_norm`, BatchNorms keep their running statistics in training too."""
        super().train(mode)
        if self.frozen_norm:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm3d):
                    m.eval()
        return self

    def decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The decoder's outputs (dec3, dec2, dec1 at 1/8, 1/4, 1/2 resolution; full-resolution features)."""
        s1 = self.enc1(self.stem(x))
        s2 = self.enc2(self.pool(s1))
        s3 = self.enc3(self.pool(s2))
        y = self.base(self.pool(s3))
        d3 = self.dec3(torch.cat([self.up3(y), s3], dim=1))
        d2 = self.dec2(torch.cat([self.up2(d3), s2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), s1], dim=1))
        return d3, d2, d1, self.final(self.up0(d1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[N, 2, D, H, W]`` with D, H, W multiples of 16 → logits ``[N, 6, D, H, W]``."""
        return self.head(self.decode(x)[-1])


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
