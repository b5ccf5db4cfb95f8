"""Each 2D seed's training recipe as a preset: optimiser, schedule, loss with deep-supervision weights,
sampling and intensity normalisation — and a short training loop that follows it.

Figures marked "paper" come from the seeds' descriptions; the others are the reference code's
defaults (nnU-Net v1, HRNet-Semantic-Segmentation) or, for seed 002 whose description gives no recipe,
stated assumptions (`notes`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from abdoseg.inference.card import Window
from abdoseg.training.losses import DiceCELoss
from abdoseg.training.slices.data import N_SLICE_CLASSES, Intensity, SliceSampler


def nnunet_ds_weights(n_outputs: int) -> tuple[float, ...]:
    """nnU-Net v1: weight 1/2^i for output i (full resolution first), the coarsest 0, normalised to sum 1."""
    w = np.array([1 / 2**i for i in range(n_outputs)])
    w[-1] = 0.0 if n_outputs > 1 else w[-1]
    return tuple(float(x) for x in w / w.sum())


@dataclass(frozen=True)
class Recipe2D:
    """One seed's training recipe (`notes` says where each figure comes from)."""

    arch: str
    seed: str
    optimizer: str  # "sgd_nesterov" | "adam"
    lr: float
    loss: str  # "dice_ce" (Dice over the organs + cross-entropy) | "ce"
    ds_weights: tuple[float, ...] | None  # per network output, full resolution first; None: nnU-Net's rule
    intensity: str  # "windows" | "ct_zscore"
    windows: tuple[Window, ...] = ()
    momentum: float = 0.0
    weight_decay: float = 0.0
    poly_power: float | None = 0.9  # lr · (1 − t/T)^power; None: constant
    foreground_fraction: float = 0.0
    slice_size: tuple[int, int] = (512, 512)
    crop: tuple[int, int] | None = None  # training crop of a slice; None: whole slices
    batch_size: int = 12
    mixed_precision: bool = False  # fp16 autocast on CUDA only
    notes: str = ""

    def optimizer_for(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "sgd_nesterov":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, nesterov=True, weight_decay=self.weight_decay)
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        raise ValueError(f"{self.arch}: unknown optimizer {self.optimizer!r}")

    def lr_at(self, step: int, total: int) -> float:
        """Learning rate at `step` of `total` (nnU-Net's poly schedule, per epoch there, per step here)."""
        return self.lr_at_fraction(step / max(total, 1))

    def lr_at_fraction(self, done: float) -> float:
        """Learning rate once the share `done` (0..1) of the run's steps or time is spent."""
        return self.lr if self.poly_power is None else self.lr * max(0.0, 1 - done) ** self.poly_power

    def loss_fn(self, n_classes: int = N_SLICE_CLASSES) -> DeepSupervisionLoss:
        """The recipe's loss over all deep-supervision outputs."""
        if self.loss == "dice_ce":  # soft Dice over the foreground classes (nnU-Net: do_bg=False) + CE
            base: Callable = DiceCELoss(np.r_[0.0, np.full(n_classes - 1, 1 / (n_classes - 1))], ce_weight=1.0)
        elif self.loss == "ce":
            base = lambda logits, target: F.cross_entropy(logits.float(), target)
        else:
            raise ValueError(f"{self.arch}: unknown loss {self.loss!r}")
        return DeepSupervisionLoss(base, self.ds_weights)

    def make_intensity(self, volumes: list) -> Intensity:
        """The recipe's HU normalisation (nnU-Net's CT statistics come from `volumes`)."""
        return Intensity(windows=self.windows) if self.intensity == "windows" else Intensity.ct_zscore(volumes)


class DeepSupervisionLoss(nn.Module):
    """Σ_i w_i · loss(output_i, target resized to output_i by nearest neighbour)."""

    def __init__(self, base: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], weights: tuple[float, ...] | None) -> None:
        super().__init__()
        self.base, self.weights = base, weights  # None: nnunet_ds_weights(number of outputs)

    def forward(self, outputs: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        outputs = [outputs] if isinstance(outputs, torch.Tensor) else outputs
        weights = nnunet_ds_weights(len(outputs)) if self.weights is None else self.weights
        if len(outputs) != len(weights):
            raise ValueError(f"{len(outputs)} network outputs but {len(weights)} deep-supervision weights")
        total = outputs[0].new_zeros(())
        for w, logits in zip(weights, outputs):
            if w > 0:
                t = target if logits.shape[2:] == target.shape[1:] else \
                    F.interpolate(target[:, None].float(), size=logits.shape[2:], mode="nearest")[:, 0].long()
                total = total + w * self.base(logits, t)
        return total


ABDOMEN = Window(level=40.0, width=400.0)
RECIPES: dict[str, Recipe2D] = {r.arch: r for r in (
    Recipe2D("vgg13_unet_ds", "002", "adam", 1e-3, "dice_ce", (0.5, 0.25, 0.125, 0.0625, 0.0625), "windows",
             (ABDOMEN,), batch_size=8,
             notes="assumed (the description gives no recipe): Adam 1e-3 with poly decay, Dice + CE on all five "
                   "outputs halving per stage, one abdominal window W400/L40, whole 512x512 slices"),
    Recipe2D("nnunet2d", "003", "sgd_nesterov", 0.01, "dice_ce", None, "ct_zscore",
             momentum=0.99, weight_decay=3e-5, foreground_fraction=1 / 3, batch_size=12,
             notes="paper: SGD Nesterov 0.99, lr 0.01 poly 0.9, Dice + CE on every deep-supervision output, 33.3 % "
                   "foreground-forced samples; nnU-Net v1 defaults: weight decay 3e-5, DS weights 1/2^i with the "
                   "coarsest 0, CT clip/z-score, batch 12"),
    Recipe2D("hrnet48_ocr", "004", "adam", 1e-3, "ce", (1.0, 0.4), "windows",
             (ABDOMEN, Window(level=60.0, width=100.0), Window(level=0.0, width=2000.0)), crop=(256, 256),
             batch_size=8, mixed_precision=True,
             notes="paper: Adam 1e-3, fp16, 256x256 crops, whole 512x512 slices at inference; HRNet-Semantic-"
                   "Segmentation defaults: CE on [main, auxiliary] weighted 1 / 0.4, poly 0.9; three HU windows "
                   "for the three input channels (assumed)"),
)}


def build_for(recipe: Recipe2D, width: float, in_channels: int, n_classes: int = N_SLICE_CLASSES,
              patch: int | None = None) -> nn.Module:
    """The recipe's network at `width` for its training input (nnU-Net plans its depth from the patch side,
    `patch`, default the recipe's crop or slice)."""
    from abdoseg.networks import hrnet48_ocr, nnunet2d, vgg13_unet_ds

    if recipe.arch == "nnunet2d":
        return nnunet2d.build(n_classes, width, in_channels, patch=patch or min(recipe.crop or recipe.slice_size))
    return {"vgg13_unet_ds": vgg13_unet_ds.build, "hrnet48_ocr": hrnet48_ocr.build}[recipe.arch](n_classes, width, in_channels)


class RecipeStepper:
    """Optimiser steps of a recipe on one model: its optimiser, loss, gradient clipping and (CUDA) fp16."""

    def __init__(self, recipe: Recipe2D, model: nn.Module, intensity: Intensity, device: str = "cpu") -> None:
        self.recipe, self.model, self.intensity, self.device = recipe, model.to(device).train(), intensity, device
        self.optimizer, self.loss_fn = recipe.optimizer_for(model.parameters()), recipe.loss_fn()
        self.amp = recipe.mixed_precision and device.startswith("cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def step(self, hu: torch.Tensor, target: torch.Tensor, done: float) -> float:
        """One step on a batch (HU [B,h,w], labels [B,h,w]) at schedule position `done` (0..1); its loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.recipe.lr_at_fraction(done)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.amp):
            loss = self.loss_fn(self.model(self.intensity(hu.to(self.device))), target.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.recipe.optimizer == "sgd_nesterov":  # nnU-Net clips the gradient norm at 12
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 12.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())


def train_steps(recipe: Recipe2D, model: nn.Module, sampler: SliceSampler, intensity: Intensity, steps: int,
                total_steps: int | None = None, device: str = "cpu") -> list[float]:
    """Run `steps` optimiser steps of `recipe` (lr schedule over `total_steps`); the loss of each step."""
    stepper = RecipeStepper(recipe, model, intensity, device)
    return [stepper.step(*sampler.batch(), step / max(total_steps or steps, 1)) for step in range(steps)]
