"""The training loop: random augmented crops of cached model-grid scans, whole-scan validation.

Epoch = `iters_per_epoch` Adam steps on batches of crops, then validation of every validation scan whole
(soft-Dice loss and hard Dice of each organ at the model grid). Reduce-on-plateau and early stopping watch the
mean organ Dice; `best.pt` keeps the best epoch, `last.pt` everything needed to resume bit-for-bit at an epoch
boundary (model, optimiser, scheduler, scaler, history, elapsed time). Every epoch appends one JSON line to
`train_log.jsonl` and redraws `curves.png`.

Under `torchrun --nproc-per-node N -m abdoseg train ...` the same loop runs data-parallel
(abdoseg.training.distributed): `batch_size` is the global batch, each rank builds its share of it (crop i of step s is
drawn from its own generator, whichever rank builds it), gradients are averaged, validation scans are split across
ranks, and rank 0 alone writes the run folder.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from abdoseg.evaluation.metrics import dice
from abdoseg.inference.card import Geometry
from abdoseg.inference.labels import DEFAULT_LABELSET, label_map
from abdoseg.networks.cobra_unet import N_CLASSES, CobraUNet
from abdoseg.training import distributed
from abdoseg.training.augment import AugmentConfig, augmented_crop
from abdoseg.training.data import CROPS, SHORT_CROPS, TRAIN_CROPS, Case, Sample, class_counts, find_cases, load_samples
from abdoseg.training.held_out import held_out_report, split_held_out
from abdoseg.training.losses import DiceCELoss, class_weights_from_counts
from abdoseg.training.pyramid import PyramidUNet, consistency_kl, load_unlabelled, sigmoid_rampup, supervised_loss
from abdoseg.training.structures import StructureSample, load_structure_samples
from abdoseg.training.synthesis import SynthConfig, synthetic_crop
from abdoseg.training.windows import hu_to_channels

log = logging.getLogger("training")


def organ_names(labelset: str) -> tuple[str, ...]:
    """Names of the organ classes 2.. of a label set's network (class = label + 1; 0 air, 1 body)."""
    return tuple(label_map(labelset).organs.values())


def network_classes(labelset: str) -> int:
    """Network classes of a label set: air, body, then one per organ."""
    return 2 + len(label_map(labelset).organs)


def build_network(labelset: str, dropout: float = 0.1, frozen_norm: bool = False,
                  deep_supervision: bool = False) -> CobraUNet:
    """The whole-scan network with one output class per organ of `labelset` (plus air and body); with
    `deep_supervision`, 3 more decoder heads (abdoseg.training.pyramid)."""
    if deep_supervision:
        return PyramidUNet(network_classes(labelset), dropout, frozen_norm)
    model = CobraUNet(dropout=dropout, frozen_norm=frozen_norm)
    if network_classes(labelset) != N_CLASSES:
        model.head = torch.nn.Conv3d(model.head.in_channels, network_classes(labelset), 1)
    return model


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; saved as RUN_DIR/config.json."""

    data: str
    geometry: Geometry = Geometry(mode="resize", shape=(96, 192, 192))
    folds: int = 1
    fold: int = 0
    epochs: int = 60
    iters_per_epoch: int = 30
    batch_size: int = 2
    crop: tuple[int, int, int] = (48, 96, 96)
    lr: float = 1e-3
    ce_weight: float = 1.0
    dice_power: float = 0.25
    organ_center_p: float = 0.7
    plateau_patience: int = 4
    early_stop_patience: int = 12
    max_minutes: float | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    channels_last: bool = True
    val_crops: tuple[str, ...] = ("full",)
    init_from: str | None = None
    dropout: float = 0.1  # the input stage's channel dropout (CobraUNet)
    freeze_norm: bool = False  # BatchNorm statistics frozen (fine-tuning a warm start, abdoseg.training.warm_start)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    labelset: str = DEFAULT_LABELSET  # abdoseg.inference.labels: the organs the labels hold and the network predicts
    deep_supervision: bool = False  # 4 decoder outputs (abdoseg.training.pyramid)
    unlabelled: str | None = None  # folder of unlabelled scans: KL consistency of the 4 outputs (training.pyramid)
    unsup_weight: float = 0.1  # the consistency term's full weight, reached by a sigmoid ramp-up
    hold_out: tuple[str, ...] = ()  # cases never trained or validated on, scored at the end (training.held_out)
    structures: str | None = None  # folder of <case>_total.nii.gz structure maps: the synthesis's sources
    synth: SynthConfig = field(default_factory=SynthConfig)  # label-driven synthesis (training.synthesis)

    def __post_init__(self) -> None:
        if self.folds < 1 or not 0 <= self.fold < self.folds:
            raise ValueError(f"fold must satisfy 0 <= fold < folds, got fold={self.fold}, folds={self.folds}")
        if any(c % 16 for c in self.crop):
            raise ValueError(f"crop sizes must be multiples of 16, got {self.crop}")
        unknown = set(self.val_crops) - set(CROPS)
        if unknown:
            raise ValueError(f"unknown validation crop(s) {sorted(unknown)}; valid: {sorted(CROPS)}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        label_map(self.labelset)  # ValueError naming the valid label sets
        if self.unlabelled and not self.deep_supervision:
            raise ValueError("unlabelled scans need deep supervision: the pseudo-label is the mean of its 4 outputs")
        if self.synth.p > 0 and not self.structures:
            raise ValueError("synthesis (synth.p > 0) needs a folder of structure maps (--structures)")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        d = json.loads(text)
        g = d.pop("geometry")
        geometry = Geometry(
            mode=g["mode"], shape=tuple(g["shape"]), spacing=None if g["spacing"] is None else tuple(g["spacing"]),
            pad_hu=g.get("pad_hu", -1024.0),
        )
        a = d.pop("augment")
        augment = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in a.items()})
        synth = SynthConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("synth", {}).items()})
        return cls(geometry=geometry, augment=augment, synth=synth, crop=tuple(d.pop("crop")),
                   val_crops=tuple(d.pop("val_crops")),
                   hold_out=tuple(d.pop("hold_out", ())), **d)


def split_cases(cases: list[Case], folds: int, fold: int) -> tuple[list[Case], list[Case]]:
    """(train, validation) cases: case i validates in fold i % folds. One fold: both are all cases."""
    if folds == 1:
        return cases, cases
    if folds > len(cases):
        raise ValueError(f"{folds} folds need at least {folds} cases, found {len(cases)}")
    val = [c for i, c in enumerate(cases) if i % folds == fold]
    return [c for c in cases if c not in val], val


def sample_center(classes: np.ndarray, rng: np.random.Generator, organ_p: float) -> np.ndarray:
    """A crop centre (z, y, x). With probability `organ_p`: a voxel of one organ class drawn uniformly among the
    organs present (so small organs are seen as often as the liver); otherwise a body voxel."""
    wanted = classes >= 1
    if rng.random() < organ_p:
        present = np.flatnonzero(np.bincount(classes.ravel())[2:]) + 2
        if present.size:
            wanted = classes == present[rng.integers(len(present))]
    idx = np.flatnonzero(wanted)
    if idx.size == 0:
        return (np.array(classes.shape) - 1) / 2.0
    return np.array(np.unravel_index(idx[rng.integers(idx.size)], classes.shape), dtype=float)


def crop_rng(seed: int, epoch: int, step: int, index: int) -> np.random.Generator:
    """The generator of crop `index` of the global batch of `step` in `epoch`: the same on whichever rank builds it."""
    return np.random.default_rng([seed, epoch, step, index])


def make_batch(
    samples: list[Sample], cfg: TrainConfig, epoch: int, step: int, indices: range | None = None,
    sources: list[StructureSample] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops `indices` (default: all `batch_size`) of a step's global batch of augmented crops:
    image [b, 2, d, h, w] float32, target [b, d, h, w] int64. With structure `sources`, a crop is synthetic
    (abdoseg.training.synthesis) with probability `cfg.synth.p`."""
    images, targets = [], []
    for i in range(cfg.batch_size) if indices is None else indices:
        rng = crop_rng(cfg.seed, epoch, step, i)
        if sources and rng.random() < cfg.synth.p:
            hu, lab = _synthetic(sources, cfg, rng)
        else:
            s = samples[rng.integers(len(samples))]
            center = sample_center(s.classes, rng, cfg.organ_center_p)
            hu, lab = augmented_crop(torch.from_numpy(s.hu), torch.from_numpy(s.classes), center, cfg.crop, rng,
                                     cfg.augment)
        images.append(hu_to_channels(hu))
        targets.append(lab)
    return torch.stack(images), torch.stack(targets)


def model_spacing(cfg: TrainConfig) -> tuple[float, float, float]:
    """The model grid's spacing in mm (a "resize" geometry has none fixed: the shipped canvas's is assumed)."""
    return tuple(cfg.geometry.spacing) if cfg.geometry.spacing else (4.0, 2.6, 2.6)


def _synthetic(sources: list[StructureSample], cfg: TrainConfig, rng: np.random.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    source = sources[rng.integers(len(sources))]
    center = sample_center(source.classes, rng, cfg.organ_center_p)
    crop = synthetic_crop(source, center, cfg.crop, rng, cfg.synth, cfg.augment, cfg.labelset, model_spacing(cfg))
    return crop.hu, crop.classes


def dice_scores(pred: np.ndarray, truth: np.ndarray, classes: range) -> list[float]:
    """Hard Dice per class; NaN where the class is absent from both."""
    out = []
    for c in classes:
        p, t = pred == c, truth == c
        out.append(dice(t, p) if p.any() or t.any() else math.nan)
    return out


def _prepare(x: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    x = x.to(cfg.device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last_3d) if cfg.channels_last else x


@torch.no_grad()
def validate(model: torch.nn.Module, samples: list[Sample], loss_fn: DiceCELoss, cfg: TrainConfig,
             ctx: distributed.Context = distributed.Context()) -> dict:
    """Whole-scan loss and organ Dice (means over the validation scans, NaN-aware). Each rank scores its share
    of the scans; the per-scan results of all ranks are gathered, so every rank returns the same means."""
    model.eval()
    scores = []
    for s in samples[ctx.rank::ctx.world]:
        image = _prepare(hu_to_channels(torch.from_numpy(s.hu))[None], cfg)
        target = torch.from_numpy(s.classes.astype(np.int64))[None].to(cfg.device)
        with torch.autocast("cuda", enabled=cfg.device.startswith("cuda")):
            logits = model(image)
        pred = logits.argmax(1)[0].cpu().numpy()
        scores.append((float(loss_fn(logits.float(), target)), dice_scores(pred, s.classes, range(2, logits.shape[1]))))
    scores = distributed.gather(scores, ctx)
    losses, dices = [x[0] for x in scores], [x[1] for x in scores]
    names = organ_names(cfg.labelset)
    per_organ = np.nanmean(np.array(dices, dtype=float), axis=0) if dices else np.full(len(names), np.nan)
    return {
        "val_loss": float(np.mean(losses)),
        "val_dice": {n: float(d) for n, d in zip(names, per_organ)},
        "val_mean_dice": float(np.nanmean(per_organ)),
    }


def plot_curves(history: list[dict], path: Path) -> None:
    """Train/validation loss and validation organ Dice against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(epochs, [h["train_loss"] for h in history], label="train (augmented crops)")
    a.plot(epochs, [h["val_loss"] for h in history], label="validation (whole scans)")
    a.set_xlabel("epoch")
    a.set_ylabel("Dice + CE loss")
    a.set_yscale("log")
    a.legend()
    for name in history[0]["val_dice"] if history else ():
        b.plot(epochs, [h["val_dice"][name] for h in history], label=name)
    b.set_xlabel("epoch")
    b.set_ylabel("validation Dice (model grid)")
    b.set_ylim(0, 1)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass
class _Parts:
    """What a run updates and checkpoints."""

    model: torch.nn.Module  # the network itself (checkpointed); `net` is what the training steps call
    net: torch.nn.Module  # `model`, or DDP over it under torchrun
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"val_mean_dice": -1.0})
    elapsed_s: float = 0.0

    def save_last(self, path: Path, epoch: int) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                 "scaler": self.scaler.state_dict(), "history": self.history, "best": self.best,
                 "elapsed_s": self.elapsed_s, "epoch": epoch}
        torch.save(state, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)

    def load_last(self, path: Path, device: str) -> int:
        """Restore everything from `path`; return the epoch to continue with."""
        state = torch.load(path, map_location=device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history, self.best, self.elapsed_s = state["history"], state["best"], state["elapsed_s"]
        return state["epoch"] + 1


def _consistency(net: torch.nn.Module, unlabelled: list[Sample], cfg: TrainConfig, epoch: int, step: int,
                 share: range) -> torch.Tensor:
    """The KL consistency term of a step's unlabelled crops (drawn from their own generators)."""
    image, _ = make_batch(unlabelled, replace(cfg, seed=cfg.seed + 1), epoch, step, share)
    with torch.autocast("cuda", enabled=cfg.device == "cuda"):
        outputs = net(_prepare(image, cfg))
    return consistency_kl(outputs)


def _train_epoch(parts: _Parts, samples: list[Sample], loss_fn, cfg: TrainConfig, epoch: int, deadline_s: float,
                 progress: bool, ctx: distributed.Context = distributed.Context(), unlabelled: list[Sample] = (),
                 ramp: float = 0.0, terms: dict | None = None, sources: list[StructureSample] = ()) -> list[float]:
    """Adam steps on random crops until `iters_per_epoch` or the run's time budget; return the step losses
    (each the loss of the whole global batch, the same on every rank). With `unlabelled` scans, each step adds
    `cfg.unsup_weight * ramp *` the consistency term of unlabelled crops; `terms` collects both terms."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed * 100_003 + epoch + 7_919 * ctx.rank)  # dropout masks: a stream per rank
    parts.net.train()
    share = distributed.batch_slice(cfg.batch_size, ctx)
    losses: list[float] = []
    bar = tqdm(range(cfg.iters_per_epoch), desc=f"epoch {epoch}", disable=not (progress and ctx.is_main), leave=False)
    for step in bar:
        image, target = make_batch(samples, cfg, epoch, step, share, sources)
        image, target = _prepare(image, cfg), target.to(cfg.device)
        with torch.autocast("cuda", enabled=cfg.device == "cuda"):
            logits = parts.net(image)
        loss = supervised_loss(logits, target, loss_fn)
        if unlabelled:
            unsup = _consistency(parts.net, unlabelled, cfg, epoch, step, share)
            terms["supervised"].append(loss.item())
            terms["consistency"].append(unsup.item())
            loss = loss + cfg.unsup_weight * ramp * unsup
        parts.opt.zero_grad(set_to_none=True)
        parts.scaler.scale(loss).backward()
        parts.scaler.step(parts.opt)
        parts.scaler.update()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if distributed.any_rank(parts.elapsed_s + time.perf_counter() - t0 >= deadline_s, ctx):
            break
    return losses


def _load_data(cfg: TrainConfig, run_dir: Path, ctx: distributed.Context
               ) -> tuple[list[Sample], list[Sample], list[StructureSample]]:
    """Cached model-grid samples for training and validation, and the synthesis's structure samples of the
    training cases (rank 0 fills the cache, the others then read it)."""
    pool, held = split_held_out(find_cases(Path(cfg.data)), cfg.hold_out)
    train_cases, val_cases = split_cases(pool, cfg.folds, cfg.fold)
    with distributed.main_first(ctx):
        train_samples = load_samples(train_cases, TRAIN_CROPS, cfg.geometry, run_dir / "cache", cfg.labelset)
        val_samples = load_samples(val_cases, tuple(CROPS[n] for n in cfg.val_crops), cfg.geometry, run_dir / "cache",
                                   cfg.labelset)
        sources = (load_structure_samples(train_cases, Path(cfg.structures), SHORT_CROPS, cfg.geometry,
                                          run_dir / "cache", cfg.labelset) if cfg.synth.p > 0 else [])
    log.info("train: %s (%d cached scans); validation: %s (%d scans)%s",
             [c.name for c in train_cases], len(train_samples), [c.name for c in val_cases], len(val_samples),
             " — the SAME cases (one fold)" if cfg.folds == 1 else "")
    if held:
        log.info("held out (never trained or validated on; scored at the end): %s", [c.name for c in held])
    if sources:
        log.info("synthesis: %.0f %% of crops drawn from %d structure samples", 100 * cfg.synth.p, len(sources))
    return train_samples, val_samples, sources


def _build(cfg: TrainConfig, train_samples: list[Sample], resume: bool,
           ctx: distributed.Context) -> tuple[_Parts, DiceCELoss]:
    """Network (rank 0's initial weights on every rank), optimiser, schedule, scaler and loss."""
    weights = class_weights_from_counts(class_counts(train_samples, network_classes(cfg.labelset)), cfg.dice_power)
    log.info("class weights: %s", np.round(weights, 4).tolist())
    model = build_network(cfg.labelset, cfg.dropout, cfg.freeze_norm, cfg.deep_supervision).to(cfg.device)
    if cfg.init_from and not resume:  # fine-tune: weights only; optimiser, schedule and history start fresh
        init_weights(model, cfg.init_from, cfg.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    net = distributed.wrap(model, ctx)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=cfg.plateau_patience)
    parts = _Parts(model, net, opt, sched, torch.amp.GradScaler("cuda", enabled=cfg.device == "cuda"))
    return parts, DiceCELoss(weights, cfg.ce_weight).to(cfg.device)


def init_weights(model: torch.nn.Module, checkpoint: str | Path, device: str) -> list[str]:
    """Load a checkpoint's weights into `model`; tensors whose shape differs (the output head of a network
    trained on another label set) keep their fresh initialisation. Return the names of those."""
    state = torch.load(checkpoint, map_location=device, weights_only=False)["model"]
    fresh = [k for k, v in model.state_dict().items()
             if (k in state and state[k].shape != v.shape) or (k not in state and k.startswith("aux."))]
    result = model.load_state_dict({k: v for k, v in state.items() if k not in fresh}, strict=False)
    if set(result.missing_keys) - set(fresh) or result.unexpected_keys:
        raise ValueError(f"{checkpoint}: not this network's weights (missing {sorted(set(result.missing_keys) - set(fresh))}, "
                         f"unexpected {result.unexpected_keys})")
    log.info("initialised the network from %s%s", checkpoint, f" (fresh: {', '.join(fresh)})" if fresh else "")
    return fresh


def _start(parts: _Parts, cfg: TrainConfig, run_dir: Path, resume: bool, ctx: distributed.Context) -> int:
    """The first epoch: 0 (config.json written by rank 0), or the one after `last.pt` (read by every rank)."""
    last = run_dir / "last.pt"
    if not resume:
        if ctx.is_main:
            (run_dir / "config.json").write_text(cfg.to_json())
        return 0
    if not last.is_file():
        raise ValueError(f"{last}: no checkpoint to resume from")
    start_epoch = parts.load_last(last, cfg.device)
    log.info("resumed from %s at epoch %d (%.1f min trained)", last, start_epoch, parts.elapsed_s / 60)
    return start_epoch


def _record_epoch(parts: _Parts, record: dict, run_dir: Path, ctx: distributed.Context) -> bool:
    """Schedule, history and best; rank 0 writes best.pt, last.pt, the log line and the curves. True if improved."""
    parts.sched.step(record["val_mean_dice"])
    parts.history.append(record)
    improved = record["val_mean_dice"] > parts.best["val_mean_dice"]
    if improved:
        parts.best = record
    if ctx.is_main:
        if improved:
            torch.save({"model": parts.model.state_dict(), "epoch": record["epoch"], "record": record}, run_dir / "best.pt")
        parts.save_last(run_dir / "last.pt", record["epoch"])
        with open(run_dir / "train_log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        plot_curves(parts.history, run_dir / "curves.png")
    log.info("epoch %d: train %.4f, val %.4f, Dice %s, lr %.1e, %.2f s/step, %.1f min%s", record["epoch"],
             record["train_loss"], record["val_loss"], {k: round(v, 3) for k, v in record["val_dice"].items()},
             record["lr"], record["step_s"], parts.elapsed_s / 60, " *best*" if improved else "")
    return improved


def train(cfg: TrainConfig, run_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train into `run_dir`; return the best epoch's record. Resumes from `run_dir/last.pt` if `resume`.
    Under torchrun, every rank calls this (data-parallel; rank 0 writes the run folder)."""
    ctx = distributed.init(cfg.device)
    try:
        return _train(cfg, Path(run_dir), resume, progress, ctx)
    finally:
        distributed.teardown(ctx)


def _train(cfg: TrainConfig, run_dir: Path, resume: bool, progress: bool, ctx: distributed.Context) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    if not ctx.is_main:
        log.setLevel(logging.WARNING)  # one rank tells the story
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    distributed.batch_slice(cfg.batch_size, ctx)  # refuse a batch that does not split before any work
    train_samples, val_samples, sources = _load_data(cfg, run_dir, ctx)
    if sources and ctx.is_main:
        from abdoseg.training.synthesis_preview import write_preview

        write_preview(sources, cfg, run_dir / "synthetic_preview.png")
    unlabelled = load_unlabelled(Path(cfg.unlabelled), cfg.geometry) if cfg.unlabelled else []
    parts, loss_fn = _build(cfg, train_samples, resume, ctx)
    start_epoch = _start(parts, cfg, run_dir, resume, ctx)
    step_loss = distributed.global_batch_loss(loss_fn, ctx)
    budget = cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    since_best = parts.history[-1]["epoch"] - parts.best.get("epoch", -1) if parts.history else 0
    for epoch in range(start_epoch, cfg.epochs):
        if distributed.any_rank(parts.elapsed_s >= budget, ctx):
            log.info("wall-time budget of %.1f min reached before epoch %d", cfg.max_minutes, epoch)
            break
        t0 = time.perf_counter()
        ramp = sigmoid_rampup(parts.elapsed_s / budget if cfg.max_minutes else epoch / max(1, cfg.epochs - 1))
        terms: dict = {"supervised": [], "consistency": []}
        losses = _train_epoch(parts, train_samples, step_loss, cfg, epoch, budget, progress, ctx, unlabelled, ramp,
                              terms, sources)
        if unlabelled:
            log.info("epoch %d: supervised %.4f, consistency %.4f (weight %.4f)", epoch, np.mean(terms["supervised"]),
                     np.mean(terms["consistency"]), cfg.unsup_weight * ramp)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "steps": len(losses),
                  **({"train_supervised_loss": float(np.mean(terms["supervised"])),
                      "train_consistency_loss": float(np.mean(terms["consistency"])),
                      "consistency_weight": cfg.unsup_weight * ramp} if unlabelled else {}),
                  "step_s": (time.perf_counter() - t0) / len(losses),
                  **validate(parts.model, val_samples, loss_fn, cfg, ctx), "lr": parts.opt.param_groups[0]["lr"]}
        parts.elapsed_s += time.perf_counter() - t0
        record["elapsed_min"] = parts.elapsed_s / 60
        since_best = 0 if _record_epoch(parts, record, run_dir, ctx) else since_best + 1
        if since_best >= cfg.early_stop_patience:
            log.info("early stop: no improvement for %d epochs", since_best)
            break
    if cfg.hold_out and ctx.is_main:
        _score_held_out(parts, cfg, run_dir)
    return parts.best


def _score_held_out(parts: _Parts, cfg: TrainConfig, run_dir: Path) -> None:
    """The held-out report of the final network, with the budget it was trained with."""
    pool, held = split_held_out(find_cases(Path(cfg.data)), cfg.hold_out)
    budget = {"trained_on": [c.name for c in pool], "epochs_run": len(parts.history),
              "optimizer_steps": int(sum(h["steps"] for h in parts.history)), "batch_size": cfg.batch_size,
              "crop": list(cfg.crop), "training_minutes": round(parts.elapsed_s / 60, 2), "seed": cfg.seed}
    held_out_report(parts.model, cfg, held, run_dir, budget)
