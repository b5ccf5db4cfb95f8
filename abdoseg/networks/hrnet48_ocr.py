"""HRNetV2-W48 + OCR head (seed 004): the `seg_hrnet_ocr` model of HRNet-Semantic-Segmentation, w48 config.

Stem: two stride-2 conv3×3-BN-ReLU (64). Stage 1: four Bottlenecks (64 → 256). Stages 2–4: 1, 4 and 3
multi-resolution modules of four BasicBlocks per branch, branches 48, 96, 192, 384 channels (×`width`) at
1/4, 1/8, 1/16, 1/32, fused by 1×1 convs + bilinear upsampling (coarse → fine) and stride-2 conv3×3
chains (fine → coarse) after every module. Head: the four branches upsampled to 1/4 and concatenated (720);
an auxiliary 1×1 classifier (soft object regions), conv3×3 to 512, object-region gathering, object attention
(key 256) and a 1×1 classifier. Every convolution followed by BatchNorm is bias-free, as in MMSegmentation's
OCRNet-HRNetV2-W48 (ConvModule), which gives the paper's 70,354,170 parameters at 5 classes and 3 input
channels, width 1; HRNet-Semantic-Segmentation's `seg_hrnet_ocr.py` keeps a bias on the auxiliary 1×1 conv
(720) and on the 3×3 OCR conv (512): 70,355,402 there. Both logits (main, auxiliary) are upsampled
bilinearly to the input size here (the reference does it in its loss).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PAPER_PARAMETERS = 70_354_170
ALIGN_CORNERS = True  # the reference's config default
BRANCHES = (48, 96, 192, 384)
MODULES = (1, 4, 3)  # stages 2, 3, 4
BLOCKS = 4


def _bn_relu(c: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))


def _conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two conv3×3-BN with an identity shortcut."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c), _conv_bn(c, c, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


class Bottleneck(nn.Module):
    """1×1 → 3×3 → 1×1 (×4 channels) with BN, shortcut projected when the width changes."""

    def __init__(self, c_in: int, planes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c_in, planes, 1), _conv_bn(planes, planes), _conv_bn(planes, 4 * planes, 1, relu=False))
        self.residual = nn.Identity() if c_in == 4 * planes else _conv_bn(c_in, 4 * planes, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.residual(x))


def _upsample(x: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=ALIGN_CORNERS)


class HighResolutionModule(nn.Module):
    """Four BasicBlocks per branch, then every branch receives the sum of all branches at its resolution."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(nn.Sequential(*(BasicBlock(c) for _ in range(BLOCKS))) for c in channels)
        self.fuse = nn.ModuleList(
            nn.ModuleList(self._fuse_path(channels, j, i) for j in range(len(channels))) for i in range(len(channels))
        )

    @staticmethod
    def _fuse_path(ch: list[int], j: int, i: int) -> nn.Module:
        if j == i:
            return nn.Identity()
        if j > i:  # coarser to finer: 1×1 conv + BN, upsampled in forward
            return _conv_bn(ch[j], ch[i], 1, relu=False)
        steps = [_conv_bn(ch[j], ch[j], 3, 2) for _ in range(i - j - 1)]  # finer to coarser: stride-2 convs
        return nn.Sequential(*steps, _conv_bn(ch[j], ch[i], 3, 2, relu=False))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        fused = []
        for i, paths in enumerate(self.fuse):
            y = xs[i]
            for j, path in enumerate(paths):
                if j != i:
                    z = path(xs[j])
                    y = y + (_upsample(z, xs[i].shape[-2:]) if j > i else z)
            fused.append(F.relu(y))
        return fused


class ObjectContext(nn.Module):
    """OCR: soft object regions from the auxiliary logits, object attention, fuse with the pixel features."""

    def __init__(self, c: int, key: int, dropout: float = 0.05) -> None:
        super().__init__()
        self.key = key
        two = lambda: nn.Sequential(  # noqa: E731
            nn.Conv2d(c, key, 1, bias=False), _bn_relu(key), nn.Conv2d(key, key, 1, bias=False), _bn_relu(key))
        self.f_pixel, self.f_object = two(), two()
        self.f_down = nn.Sequential(nn.Conv2d(c, key, 1, bias=False), _bn_relu(key))
        self.f_up = nn.Sequential(nn.Conv2d(key, c, 1, bias=False), _bn_relu(c))
        self.fuse = nn.Sequential(nn.Conv2d(2 * c, c, 1, bias=False), _bn_relu(c), nn.Dropout2d(dropout))

    def forward(self, feats: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        n, c, h, w = feats.shape
        pixels = feats.flatten(2)  # [n, c, hw]
        regions = torch.matmul(F.softmax(aux.flatten(2), dim=2), pixels.transpose(1, 2))  # [n, k, c]
        proxy = regions.transpose(1, 2).unsqueeze(3)  # [n, c, k, 1]
        query = self.f_pixel(feats).flatten(2).transpose(1, 2)  # [n, hw, key]
        keys = self.f_object(proxy).flatten(2)  # [n, key, k]
        value = self.f_down(proxy).flatten(2).transpose(1, 2)  # [n, k, key]
        attention = F.softmax(torch.matmul(query, keys) * self.key**-0.5, dim=-1)
        context = torch.matmul(attention, value).transpose(1, 2).reshape(n, self.key, h, w)
        return self.fuse(torch.cat([self.f_up(context), feats], dim=1))


class HRNetOCR(nn.Module):
    """Input [N, C, H, W] (H, W multiples of 32) → logits [N, n_classes, H, W]; with `deep_supervision`,
    [main, auxiliary] logits."""

    def __init__(self, n_classes: int = 5, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        s = lambda c: max(1, round(c * width))  # noqa: E731
        branches = [s(c) for c in BRANCHES]
        self.deep_supervision = True
        self.stem = nn.Sequential(_conv_bn(in_channels, s(64), 3, 2), _conv_bn(s(64), s(64), 3, 2))
        self.layer1 = nn.Sequential(Bottleneck(s(64), s(64)), *(Bottleneck(4 * s(64), s(64)) for _ in range(3)))
        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        previous = [4 * s(64)]
        for n_branches, n_modules in zip((2, 3, 4), MODULES):
            current = branches[:n_branches]
            self.transitions.append(nn.ModuleList(
                (nn.Identity() if previous[i] == current[i] else _conv_bn(previous[i], current[i])) if i < len(previous)
                else _conv_bn(previous[-1], current[i], 3, 2) for i in range(n_branches)
            ))
            self.stages.append(nn.Sequential(*(HighResolutionModule(current) for _ in range(n_modules))))
            previous = current
        total, mid, key = sum(branches), s(512), s(256)
        self.aux_head = nn.Sequential(nn.Conv2d(total, total, 1, bias=False), _bn_relu(total), nn.Conv2d(total, n_classes, 1))
        self.conv3x3_ocr = nn.Sequential(nn.Conv2d(total, mid, 3, padding=1, bias=False), _bn_relu(mid))
        self.ocr = ObjectContext(mid, key)
        self.cls_head = nn.Conv2d(mid, n_classes, 1)

    def _backbone(self, x: torch.Tensor) -> torch.Tensor:
        xs = [self.layer1(self.stem(x))]
        for transition, stage in zip(self.transitions, self.stages):
            # a new branch grows from the coarsest existing one
            xs = stage([t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(transition)])
        size = xs[0].shape[-2:]
        return torch.cat([xs[0], *(_upsample(y, size) for y in xs[1:])], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        feats = self._backbone(x)
        aux = self.aux_head(feats)
        feats = self.conv3x3_ocr(feats)
        out = _upsample(self.cls_head(self.ocr(feats, aux)), x.shape[-2:])
        return [out, _upsample(aux, x.shape[-2:])] if self.deep_supervision else out


def build(n_classes: int = 5, width: float = 1.0, in_channels: int = 3) -> HRNetOCR:
    """HRNetV2-W48 + OCR at `width` × its channel counts (3 input channels, as the ImageNet-initialised reference)."""
    return HRNetOCR(n_classes, width, in_channels)
