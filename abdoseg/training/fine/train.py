"""The fine network's training loop: random patches (a share centred on organ voxels, organs drawn with
equal probability so the pancreas is seen), light intensity augmentation, Dice + cross-entropy, AdamW with
a polynomial decay over the run's budget (iterations or minutes, whichever ends first)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from abdoseg.evaluation.metrics import dice
from abdoseg.inference.card import Shape3
from abdoseg.inference.fine.card import FineCard
from abdoseg.inference.labels import label_map
from abdoseg.networks.fine_unet import build_network
from abdoseg.training.fine.data import FineSample
from abdoseg.training.losses import DiceCELoss, class_weights_from_counts


@dataclass(frozen=True)
class TrainConfig:
    max_minutes: float = 15.0
    max_iterations: int = 100_000
    batch_size: int = 2
    lr: float = 3e-3
    weight_decay: float = 3e-5
    foreground: float = 0.67
    seed: int = 0
    log_every: int = 20
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.max_minutes <= 0 or self.max_iterations < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"training budget, batch size and lr must be positive, got {self}")
        if not 0 <= self.foreground <= 1:
            raise ValueError(f"foreground share must be in [0, 1], got {self.foreground}")


@dataclass(frozen=True)
class TrainResult:
    state_dict: dict[str, torch.Tensor]
    iterations: int
    minutes: float
    losses: list[float] = field(default_factory=list)


def sample_patch(
    sample: FineSample, patch: Shape3, rng: np.random.Generator, foreground: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A patch [C, *patch] and its labels [*patch]; zero padding (air, background) where the grid is smaller."""
    size = sample.labels.shape
    if foreground:
        organs = [int(c) for c in torch.unique(sample.labels) if c > 0]
        voxels = torch.nonzero(sample.labels == organs[rng.integers(len(organs))])
        centre = voxels[rng.integers(len(voxels))].tolist()
        start = [int(np.clip(c - p // 2 + rng.integers(-p // 4, p // 4 + 1), min(0, s - p), max(0, s - p)))
                 for c, p, s in zip(centre, patch, size)]
    else:
        start = [int(rng.integers(min(0, s - p), max(0, s - p) + 1)) for p, s in zip(patch, size)]
    src = tuple(slice(max(a, 0), min(a + p, s)) for a, p, s in zip(start, patch, size))
    dst = tuple(slice(r.start - a, r.stop - a) for r, a in zip(src, start))
    image = torch.zeros((sample.image.shape[0], *patch))
    labels = torch.zeros(patch, dtype=torch.int64)
    image[(slice(None), *dst)] = sample.image[(slice(None), *src)]
    labels[dst] = sample.labels[src]
    return image, labels


def _augment(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    scale = float(rng.uniform(0.9, 1.1))
    shift = float(rng.uniform(-0.05, 0.05))
    noise = float(rng.uniform(0.0, 0.03))
    return (image * scale + shift + noise * torch.randn_like(image)).clamp_(0.0, 1.0)


def coarse_initialised(card: FineCard, coarse_onnx) -> torch.nn.Module:
    """A "cobra" fine network initialised from the coarse model's weights (a composed ONNX of the same label
    set, abdoseg.training.warm_start): every layer copied; the head's rows are the coarse organ classes', the
    background's the coarse "body" class's (the coarse classes are air, body, then the organs)."""
    from abdoseg.training.warm_start import network_from_onnx

    if card.architecture.kind != "cobra":
        raise ValueError(f"initialising from the coarse model needs the cobra architecture, not {card.architecture.kind!r}")
    coarse = network_from_onnx(coarse_onnx)
    if coarse.head.out_channels != card.architecture.n_classes + 1:
        raise ValueError(f"{coarse_onnx}: {coarse.head.out_channels} classes, the fine card's label set "
                         f"{card.labelset} needs {card.architecture.n_classes + 1} (air, body, organs)")
    net = build_network(card.architecture)
    state = {k: v for k, v in coarse.state_dict().items() if not k.startswith("head.")}
    result = net.load_state_dict(state, strict=False)
    if set(result.missing_keys) != {"head.weight", "head.bias"} or result.unexpected_keys:
        raise ValueError(f"{coarse_onnx}: not the cobra network ({result})")
    with torch.no_grad():
        net.head.weight.copy_(coarse.head.weight[1:])
        net.head.bias.copy_(coarse.head.bias[1:])
    return net


def train(
    samples: Sequence[FineSample], card: FineCard, config: TrainConfig, log: Callable[[str], None] = lambda s: None,
    network: torch.nn.Module | None = None,
) -> TrainResult:
    """Train `network` (default: a fresh one of card.architecture) on `samples` within the config's budget, on
    `config.device` (patches are cut on the CPU); the returned state dict is on the CPU."""
    if not samples:
        raise ValueError("no training samples")
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    n_classes = card.architecture.n_classes
    counts = np.bincount(np.concatenate([s.labels.numpy().ravel() for s in samples]), minlength=n_classes)[:n_classes]
    loss_fn = DiceCELoss(class_weights_from_counts(counts)).to(config.device)
    net = (network if network is not None else build_network(card.architecture)).to(config.device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    budget_s = config.max_minutes * 60
    start = time.perf_counter()
    losses: list[float] = []
    it = 0
    while it < config.max_iterations:
        progress = max(it / config.max_iterations, (time.perf_counter() - start) / budget_s)
        if progress >= 1:
            break
        for group in opt.param_groups:
            group["lr"] = config.lr * (1 - progress) ** 0.9
        batch = [
            sample_patch(samples[rng.integers(len(samples))], card.patch_size, rng, rng.random() < config.foreground)
            for _ in range(config.batch_size)
        ]
        image = torch.stack([_augment(b[0], rng) for b in batch]).to(config.device, non_blocking=True)
        target = torch.stack([b[1] for b in batch]).to(config.device, non_blocking=True)
        loss = loss_fn(net(image), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
        opt.step()
        losses.append(float(loss.detach()))
        it += 1
        if it % config.log_every == 0:
            recent = float(np.mean(losses[-config.log_every :]))
            log(f"iter {it}  loss {recent:.4f}  lr {opt.param_groups[0]['lr']:.2e}  "
                f"{(time.perf_counter() - start) / 60:.1f} min")
    minutes = (time.perf_counter() - start) / 60
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return TrainResult(state, it, minutes, losses)


def predict_sample(net: torch.nn.Module, sample: FineSample, card: FineCard) -> torch.Tensor:
    """Labels on the fine grid by the stage's own sliding window (quick training-set check)."""
    from abdoseg.inference.fine.sliding import sliding_window_logits

    with torch.inference_mode():
        logits, _ = sliding_window_logits(net.eval(), sample.image, card.patch_size, card.architecture.n_classes,
                                          card.step)
    return logits.argmax(0)


def dice_per_organ(pred: torch.Tensor, target: torch.Tensor, labelset: str) -> list[float]:
    """Dice of each organ of `labelset` in id order (both empty → 1.0)."""
    pred, target = pred.cpu().numpy(), target.cpu().numpy()
    return [dice(target == c, pred == c) for c in label_map(labelset).organs]


__all__ = ["TrainConfig", "TrainResult", "coarse_initialised", "dice_per_organ", "predict_sample", "sample_patch",
           "train"]
