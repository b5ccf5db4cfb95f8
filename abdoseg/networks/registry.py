"""Architecture registry: every network this project can build, by name.

Each entry builds its network from a class count and a width multiplier (channel counts × width; 1 is the
published configuration) and says which seed it comes from, the input one forward takes (for the GFLOPs
column of `python -m abdoseg architectures`) and the paper's figures. Networks with deep supervision
(`deep_supervision` attribute) return a list of logits, full resolution first, while the attribute is true,
and the full-resolution logits alone once it is false (export, inference).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from abdoseg.networks import hrnet48_ocr, nnunet2d, vgg13_unet_ds


@dataclass(frozen=True)
class ArchSpec:
    """One registered architecture."""

    name: str
    seed: str
    summary: str
    build: Callable[[int, float], nn.Module]  # (n_classes, width) -> network
    n_classes: int  # the configuration the paper's figures refer to
    in_channels: int
    sample: tuple[int, ...]  # one input's spatial shape for the GFLOPs column: (H, W) or (D, H, W)
    geometry: str
    paper_parameters: int | None = None
    paper_gflops: float | None = None

    @property
    def dims(self) -> int:
        return len(self.sample)


def _cobra(n_classes: int = 6, width: float = 1.0) -> nn.Module:
    from abdoseg.networks.cobra_unet import N_CLASSES, CobraUNet

    if n_classes != N_CLASSES or width != 1.0:
        raise ValueError(f"cobra: the COBRA net has one fixed layout ({N_CLASSES} classes, width 1), "
                         f"got {n_classes} classes, width {width}")
    return CobraUNet()


def _fine(n_classes: int = 5, width: float = 1.0) -> nn.Module:
    from abdoseg.inference.fine.card import Architecture
    from abdoseg.networks.fine_unet import FineUNet

    return FineUNet(Architecture(n_classes=n_classes, base_features=max(1, round(32 * width)),
                                 max_features=max(1, round(320 * width))))


ARCHITECTURES: dict[str, ArchSpec] = {spec.name: spec for spec in (
    ArchSpec("cobra", "001", "COBRA-style 3D U-Net (coarse whole-scan stage)", _cobra, 6, 2, (96, 192, 192),
             "3D canvas 96×192×192, 2 HU windows", 436_982),
    ArchSpec("fine_unet", "fine stage", "nnU-Net-style 3D U-Net, 32…320 features", _fine, 5, 2,
             (64, 160, 160), "3D patch 64×160×160, 2 HU windows"),
    ArchSpec("vgg13_unet_ds", "002", "U-Net, VGG-13-BN encoder, deep supervision", vgg13_unet_ds.build, 5, 1,
             (512, 512), "axial slice 512×512, 1 channel", vgg13_unet_ds.PAPER_PARAMETERS, 208.1),
    ArchSpec("nnunet2d", "003", "nnU-Net 2D U-Net (8 stages, 32…480), deep supervision", nnunet2d.build, 5, 1,
             (512, 512), "axial slice 512×512, 1 channel", nnunet2d.PAPER_PARAMETERS, 61.3),
    ArchSpec("hrnet48_ocr", "004", "HRNetV2-W48 + OCR head", hrnet48_ocr.build, 5, 3, (512, 512),
             "axial slice 512×512 (trained on 256×256 crops), 3 channels", hrnet48_ocr.PAPER_PARAMETERS, 162.2),
)}

#: The 2D (slice-wise) architectures.
SLICE_ARCHITECTURES = tuple(name for name, spec in ARCHITECTURES.items() if spec.dims == 2)


def get(name: str) -> ArchSpec:
    """The registered architecture `name`; ValueError naming the known ones otherwise."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def build(name: str, n_classes: int | None = None, width: float = 1.0) -> nn.Module:
    """Network `name` with `n_classes` (default: the paper's) at `width` × its channel counts."""
    spec = get(name)
    if width <= 0:
        raise ValueError(f"{name}: width must be > 0, got {width}")
    return spec.build(spec.n_classes if n_classes is None else n_classes, width)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_deep_supervision(model: nn.Module, enabled: bool) -> nn.Module:
    """Switch a deep-supervision network between all outputs (training) and the main one (export)."""
    if hasattr(model, "deep_supervision"):
        model.deep_supervision = enabled
    return model
