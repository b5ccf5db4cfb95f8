"""Training loop of the 2D (slice-wise) systems: `python -m abdoseg train --arch vgg13_unet_ds|nnunet2d|hrnet48_ocr`.

Each architecture trains with its seed's recipe (abdoseg.training.slices.recipes: optimiser, poly schedule, loss with
deep-supervision weights, foreground forcing, crops, intensity) on axial slices of the cached canonical scans
(abdoseg.training.slices.data: the inference slice graph's in-plane resample). An epoch is `steps_per_epoch` steps, then
a validation of the same scans' organ-bearing slices (hard Dice per organ on the slice grid). The schedule runs
over `steps`, or over `max_minutes` when that budget ends first. Every epoch appends one JSON line to
`train_log.jsonl` and writes `last.pt`, which holds everything a resumed run needs to continue as the run would have
(network, optimiser, gradient scaler, step, best record, elapsed time, the sampler's and torch's random states);
`best.pt` keeps the epoch with the best mean organ Dice. The run trains on `device` (abdoseg.training.device).
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

from abdoseg.inference.labels import label_map
from abdoseg.training.data import find_cases
from abdoseg.training.device import DEVICES, resolve_device
from abdoseg.training.slices.data import N_SLICE_CLASSES, Intensity, SliceSampler, SliceVolume, load_slice_volumes
from abdoseg.training.slices.recipes import RECIPES, Recipe2D, RecipeStepper, build_for
from abdoseg.training.train import dice_scores

log = logging.getLogger("training")
CONFIG = "config.json"


@dataclass(frozen=True)
class SliceTrainConfig:
    """Everything a 2D run depends on; saved as RUN_DIR/config.json (`kind` tells it from a 3D run's)."""

    data: str
    arch: str
    width: float = 0.25
    slice_size: tuple[int, int] = (256, 256)  # in-plane grid of training and of the exported card
    batch_size: int | None = None  # None: the recipe's
    crop: tuple[int, int] | None = None  # None: the recipe's crop scaled to slice_size (recipes give it at 512)
    steps: int = 1000
    steps_per_epoch: int = 50
    max_minutes: float | None = None
    seed: int = 0
    threads: int | None = None
    slices_per_run: int | None = None  # inference: slices per network run in the card (None: inference_batch)
    device: str = "cpu"  # cpu | cuda | auto (resolved when the run starts: abdoseg.training.device)
    kind: str = "slices"

    def __post_init__(self) -> None:
        if self.arch not in RECIPES:
            raise ValueError(f"--arch {self.arch!r} has no 2D recipe; known: {', '.join(RECIPES)}")
        if self.width <= 0 or self.steps < 1 or self.steps_per_epoch < 1 or (self.slices_per_run or 1) < 1:
            raise ValueError("width must be > 0; steps, steps per epoch and slices per run >= 1")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")

    @property
    def inference_batch(self) -> int:
        """Slices per network run at inference: `slices_per_run`, else 4 (at the papers' widths on 512x512
        slices the pipeline peaked at 1.5 GB (VGG-13 U-Net) and 1.1 GB (nnU-Net 2D) with 4, 8-slice volume)."""
        return self.slices_per_run or 4

    @property
    def recipe(self) -> Recipe2D:
        return RECIPES[self.arch]

    def training_crop(self) -> tuple[int, int] | None:
        if self.crop is not None:
            return tuple(self.crop)  # type: ignore[return-value]
        if self.recipe.crop is None:
            return None
        scale = [s / r for s, r in zip(self.slice_size, self.recipe.slice_size)]
        return tuple(max(8, round(c * f)) for c, f in zip(self.recipe.crop, scale))  # type: ignore[return-value]

    def build(self, in_channels: int) -> torch.nn.Module:
        """The run's network (nnU-Net plans its depth from the training patch side)."""
        return build_for(self.recipe, self.width, in_channels, patch=min(self.training_crop() or self.slice_size))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> SliceTrainConfig:
        d = json.loads(text)
        d["slice_size"] = tuple(d["slice_size"])
        d["crop"] = None if d.get("crop") is None else tuple(d["crop"])
        return cls(**d)


def is_slice_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a 2D run (its config.json says kind "slices")."""
    path = Path(run_dir) / CONFIG
    return path.is_file() and json.loads(path.read_text()).get("kind") == "slices"


def predict_slices(model: torch.nn.Module, intensity: Intensity, hu: np.ndarray, batch: int = 8) -> np.ndarray:
    """Classes [n,H,W] uint8 of HU slices [n,H,W] by the torch network (eval mode, full-resolution output), on the
    network's device."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for b in range(0, len(hu), batch):
            logits = model(intensity(torch.from_numpy(np.ascontiguousarray(hu[b:b + batch])).to(device)))
            logits = logits[0] if isinstance(logits, (list, tuple)) else logits
            out.append(logits.argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)


def validation_slices(volumes: list[SliceVolume], per_case: int = 24) -> list[int]:
    """Up to `per_case` evenly spaced organ-bearing slice indices per volume (the validation set)."""
    picks = []
    for v in volumes:
        organ = np.flatnonzero(v.labels.reshape(len(v.labels), -1).any(1))
        picks.append(organ[np.linspace(0, len(organ) - 1, min(per_case, len(organ))).astype(int)] if len(organ) else organ)
    return picks


def validate(model: torch.nn.Module, intensity: Intensity, volumes: list[SliceVolume], picks: list) -> dict:
    """Hard Dice per organ over the validation slices of every volume together."""
    pred = np.concatenate([predict_slices(model, intensity, v.hu[p]) for v, p in zip(volumes, picks)])
    truth = np.concatenate([v.labels[p] for v, p in zip(volumes, picks)])
    names = list(label_map("flare21").organs.values())
    scores = dice_scores(pred, truth, range(1, N_SLICE_CLASSES))
    mean = float(np.nanmean(scores)) if not all(math.isnan(s) for s in scores) else 0.0
    return {"val_dice": dict(zip(names, [None if math.isnan(s) else round(s, 4) for s in scores])),
            "val_mean_dice": round(mean, 4)}


def _setup(cfg: SliceTrainConfig, run_dir: Path) -> tuple[list[SliceVolume], Intensity, torch.nn.Module]:
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    volumes = load_slice_volumes(find_cases(Path(cfg.data)), cfg.slice_size, run_dir / "cache")
    intensity = cfg.recipe.make_intensity(volumes)
    return volumes, intensity, cfg.build(intensity.n_channels)


@dataclass
class _Run:
    """What a 2D run updates and `last.pt` holds."""

    cfg: SliceTrainConfig
    stepper: RecipeStepper
    sampler: SliceSampler
    extra: dict  # intensity and parameter count, in every checkpoint (export reads them from best.pt)
    step: int = 0
    epoch: int = 0
    best: dict = field(default_factory=lambda: {"val_mean_dice": -1.0})
    elapsed_s: float = 0.0

    def model_state(self, record: dict) -> dict:
        return {"arch": self.cfg.arch, "model": self.stepper.model.state_dict(), "epoch": self.epoch,
                "record": record, **self.extra}

    def save_last(self, record: dict, path: Path) -> None:
        cuda = self.stepper.device.startswith("cuda")
        _save({**self.model_state(record), "optimizer": self.stepper.optimizer.state_dict(),
               "scaler": self.stepper.scaler.state_dict(), "step": self.step, "best": self.best,
               "elapsed_s": self.elapsed_s, "sampler_rng": self.sampler.rng.bit_generator.state,
               "torch_rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all() if cuda else None}, path)

    def load_last(self, path: Path) -> None:
        """Continue from `path` (a ValueError naming it if it is missing or holds another architecture's run)."""
        if not path.is_file():
            raise ValueError(f"{path}: no checkpoint to resume from")
        state = torch.load(path, map_location="cpu", weights_only=False)  # RNG states must stay CPU tensors
        if state.get("arch") != self.cfg.arch or "optimizer" not in state:
            held = state.get("arch") or "no resumable 2D run"
            raise ValueError(f"{path}: a checkpoint of {held}, not of --arch {self.cfg.arch}: cannot resume it")
        self.stepper.model.load_state_dict(state["model"])
        self.stepper.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # a disabled scaler (no fp16) saves nothing
            self.stepper.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.best, self.elapsed_s = state["step"], state["epoch"], state["best"], state["elapsed_s"]
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.stepper.device.startswith("cuda"):
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        log.info("resumed from %s at step %d, epoch %d (%.1f min trained)", path, self.step, self.epoch,
                 self.elapsed_s / 60)


def _start(cfg: SliceTrainConfig, run_dir: Path, resume: bool) -> tuple[_Run, list[SliceVolume], Intensity]:
    """The run's parts on its device: fresh (config.json written), or as `last.pt` left them."""
    device = resolve_device(cfg.device)  # before any work: `cuda` without a GPU is refused here
    if not resume:
        (run_dir / CONFIG).write_text(cfg.to_json())
    volumes, intensity, model = _setup(cfg, run_dir)
    sampler = SliceSampler(volumes, cfg.batch_size or cfg.recipe.batch_size, cfg.recipe.foreground_fraction,
                           cfg.training_crop(), cfg.seed)
    extra = {"intensity": asdict(intensity), "parameters": sum(p.numel() for p in model.parameters())}
    run = _Run(cfg, RecipeStepper(cfg.recipe, model, intensity, device), sampler, extra)
    if resume:
        run.load_last(run_dir / "last.pt")
    log.info("%s (seed %s) width %s on %s: %d parameters, %s", cfg.arch, cfg.recipe.seed, cfg.width, device,
             extra["parameters"], cfg.recipe.notes)
    return run, volumes, intensity


def train_slices(cfg: SliceTrainConfig, run_dir: Path, resume: bool = False) -> dict:
    """Train a 2D run into `run_dir` (with `resume`: continue it from `run_dir/last.pt`); returns the best
    epoch's record."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run, volumes, intensity = _start(cfg, run_dir, resume)
    stepper, sampler, model, picks = run.stepper, run.sampler, run.stepper.model, validation_slices(volumes)
    start = time.perf_counter() - run.elapsed_s
    budget_s = math.inf if cfg.max_minutes is None else cfg.max_minutes * 60
    while run.step < cfg.steps and time.perf_counter() - start < budget_s:
        losses = []
        for _ in range(cfg.steps_per_epoch):
            elapsed = time.perf_counter() - start
            if run.step >= cfg.steps or elapsed >= budget_s:
                break
            losses.append(stepper.step(*sampler.batch(), max(run.step / cfg.steps, elapsed / budget_s)))
            run.step += 1
        run.epoch += 1
        record = {"epoch": run.epoch, "steps": len(losses), "total_steps": run.step,
                  "loss": round(float(np.mean(losses)), 5), "lr": stepper.optimizer.param_groups[0]["lr"],
                  **validate(model, intensity, volumes, picks), "elapsed_min": round((time.perf_counter() - start) / 60, 3)}
        model.train()
        run.elapsed_s = time.perf_counter() - start
        if record["val_mean_dice"] > run.best["val_mean_dice"]:
            run.best = record
            _save(run.model_state(record), run_dir / "best.pt")
        run.save_last(record, run_dir / "last.pt")
        with open(run_dir / "train_log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        log.info("epoch %d: %d steps, loss %.4f, mean organ Dice %.4f %s (%.1f min)", run.epoch, run.step,
                 record["loss"], record["val_mean_dice"], record["val_dice"], record["elapsed_min"])
    return run.best


def run_architecture(run_dir: Path) -> str | None:
    """The architecture a run folder trains: a 2D `arch`, "cobra" (the whole-scan network), None without config.json."""
    path = Path(run_dir) / CONFIG
    return (json.loads(path.read_text()).get("arch") if is_slice_run(run_dir) else "cobra") if path.is_file() else None


def check_resume(run_dir: Path, arch: str) -> None:
    """Refuse (ValueError, one line) to resume the run in `run_dir` as another architecture than its own."""
    held = run_architecture(run_dir)
    if held is None:
        raise ValueError(f"{Path(run_dir) / CONFIG}: --resume needs the run's config.json")
    if held != arch:
        raise ValueError(f"{Path(run_dir)}: a run of --arch {held}, not of --arch {arch}: cannot resume it as {arch}")


def resumed_config(run_dir: Path, arch: str, max_minutes: float | None = None,
                   threads: int | None = None) -> SliceTrainConfig:
    """The config of the 2D run in `run_dir`, resumed as `arch` (refused if it is another architecture's run);
    a new time budget or thread count may be given, nothing that changes the maths."""
    check_resume(run_dir, arch)
    cfg = SliceTrainConfig.from_json((Path(run_dir) / CONFIG).read_text())
    changes = {k: v for k, v in (("max_minutes", max_minutes), ("threads", threads)) if v is not None}
    return replace(cfg, **changes)


def _save(state: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_slice_run(run_dir: Path, checkpoint: str = "best.pt") -> tuple[SliceTrainConfig, torch.nn.Module, Intensity, dict]:
    """(config, network in eval mode, its intensity, checkpoint record) of a 2D run folder."""
    run_dir = Path(run_dir)
    for needed in (CONFIG, checkpoint):
        if not (run_dir / needed).is_file():
            raise ValueError(f"{run_dir / needed}: missing; is {run_dir} a 2D training run folder?")
    cfg = SliceTrainConfig.from_json((run_dir / CONFIG).read_text())
    state = torch.load(run_dir / checkpoint, map_location="cpu", weights_only=False)
    i = state["intensity"]
    from abdoseg.inference.card import Window

    intensity = Intensity(windows=tuple(Window(**w) for w in i["windows"]),
                          clip=None if i["clip"] is None else tuple(i["clip"]), mean=i["mean"], std=i["std"])
    model = cfg.build(intensity.n_channels)
    model.load_state_dict(state["model"])
    return cfg, model.eval(), intensity, state
