"""The locate stage's network: training on long variants of the real scans, and export to ONNX + card section.

Input: abdoseg.inference.locate.locator_input (the one preprocessing definition) of a canonical scan, [1, C, Z, Y, X].
Output: per coarse slice, the probability that the slice cuts one of the card's organs, [Z].
Each training step builds a fresh random long scan (abdoseg.training.long_scans: mirrored organ-free slices appended
below/above, the scan cut anywhere, organs at the top, bottom, middle or absent), jitters the coarse grid's
in-plane spacing and position, and takes a binary cross-entropy step.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from abdoseg.inference.card import LocatorSpec, ModelCard, sha256_of
from abdoseg.inference.labels import DEFAULT_LABELSET
from abdoseg.inference.locate import coarse_slices, locator_input
from abdoseg.training.long_scans import extend_arrays, filler_slices

log = logging.getLogger("abdoseg.training.locator")
OPSET = 17


class LocatorNet(nn.Module):
    """3D convolutions over the coarse scan, pooled in-plane, then 1D convolutions along z -> one logit a slice."""

    def __init__(self, in_channels: int = 2, width: int = 8) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
                                 nn.MaxPool3d((1, 2, 2)))

        self.encoder = nn.Sequential(block(in_channels, w // 2), block(w // 2, w), block(w, 2 * w), block(2 * w, 2 * w))
        self.head = nn.Sequential(
            nn.Conv1d(4 * w, 2 * w, 5, padding=2), nn.ReLU(inplace=True),
            nn.Conv1d(2 * w, 2 * w, 5, padding=4, dilation=2), nn.ReLU(inplace=True),
            nn.Conv1d(2 * w, 1, 1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [1, C, Z, Y, X] -> logits [Z]."""
        f = self.encoder(image)  # [1, F, Z, y, x]
        pooled = torch.cat([f.mean(dim=(3, 4)), f.amax(dim=(3, 4))], dim=1)  # [1, 2F, Z]
        return self.head(pooled)[0, 0]


class _Exported(nn.Module):
    def __init__(self, net: LocatorNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(image))


def random_example(hu: np.ndarray, labels: np.ndarray, spacing: tuple[float, float, float], spec: LocatorSpec,
                   rng: np.random.Generator, max_slices: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One augmented (input [1,C,Z,Y,X], target [Z]) pair from a canonical labelled scan."""
    filler = filler_slices(labels)
    n = hu.shape[0]
    lo = int(rng.integers(0, max(1, n // 3))) if rng.random() < 0.5 else 0  # cut the scan anywhere
    hi = n - (int(rng.integers(0, max(1, n // 3))) if rng.random() < 0.5 else 0)
    if rng.random() < 0.15 and filler.stop > 4:  # no organ at all: the organ-free part alone
        lo, hi = 0, filler.stop
    below = above = 0
    if filler.stop > 4:
        extra = rng.uniform(0, 1600) / spacing[0]
        share = rng.choice([0.0, 1.0, rng.random()])  # organs at the top, at the bottom, in between
        below, above = int(extra * share), int(extra * (1 - share))
    part_hu, part_lab = extend_arrays(hu[lo:hi], labels[lo:hi], below, above, filler if filler.stop > 4 else slice(0, 1))
    scale = rng.uniform(0.85, 1.15)
    jittered = dataclasses.replace(spec, spacing=(spec.spacing[0] * rng.uniform(0.8, 1.25),
                                                  spec.spacing[1] * scale, spec.spacing[2] * scale))
    shift = tuple(rng.uniform(-4, 4, 2))
    image = locator_input(part_hu, spacing, jittered, shift_yx=shift)
    image += rng.normal(0, 0.01, image.shape).astype(np.float32)
    z = coarse_slices(part_hu.shape[0], spacing[0], jittered.spacing[0])
    target = part_lab.reshape(part_lab.shape[0], -1).any(axis=1)[z].astype(np.float32)
    if len(z) > max_slices:  # the net sees ~200 mm of context: a window of the coarse slices is enough
        organ = np.flatnonzero(target)
        if organ.size and rng.random() < 0.7:  # mostly windows that hold organs (and their edges)
            centre = int(rng.integers(organ[0], organ[-1] + 1)) + int(rng.integers(-max_slices // 3, max_slices // 3 + 1))
            start = int(np.clip(centre - max_slices // 2, 0, len(z) - max_slices))
        else:
            start = int(rng.integers(0, len(z) - max_slices + 1))
        image, target = image[:, :, start:start + max_slices], target[start:start + max_slices]
    return np.ascontiguousarray(image), target


def train_locator(scans: list[tuple[np.ndarray, np.ndarray, tuple]], spec: LocatorSpec, steps: int = 1000,
                  seed: int = 0, lr: float = 3e-3, width: int = 8) -> tuple[LocatorNet, list[float]]:
    """Train on random long variants of `scans` (canonical hu, labels, spacing); return the net and losses."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = LocatorNet(len(spec.windows), width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    net.train()
    for step in range(steps):
        hu, labels, spacing = scans[int(rng.integers(len(scans)))]
        image, target = random_example(hu, labels, spacing, spec, rng)
        logits, target_t = net(torch.from_numpy(image)), torch.from_numpy(target)
        positives = float(target_t.mean())  # balance organ and organ-free slices within each example
        weight = torch.where(target_t > 0, 0.5 / max(positives, 1e-3), 0.5 / max(1 - positives, 1e-3))
        loss = nn.functional.binary_cross_entropy_with_logits(logits, target_t, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            log.info("locator step %d: loss %.4f", step, np.mean(losses[-100:]))
    return net.eval(), losses


def locator_onnx(net: LocatorNet, spec: LocatorSpec) -> bytes:
    """The locator as ONNX: "image" [1, C, Z, Y, X] (Z dynamic) -> "probability" [Z]."""
    buffer = io.BytesIO()
    example = torch.zeros(1, len(spec.windows), 16, *spec.shape_yx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Exported(net.eval()), (example,), buffer, input_names=["image"], output_names=["probability"],
                          dynamic_axes={"image": {2: "Z"}, "probability": {0: "Z"}}, opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def export_locator(net: LocatorNet, spec: LocatorSpec, card_path: Path, name: str = "abdoseg_locator",
                   provenance: dict | None = None) -> Path:
    """Write `<card folder>/<name>.onnx` and put its section (file, sha256, grid, rule) into the card."""
    card_path = Path(card_path)
    onnx_path = card_path.parent / f"{name}.onnx"
    onnx_path.write_bytes(locator_onnx(net, spec))
    card = ModelCard.from_dict(json.loads(card_path.read_text()))
    section = dataclasses.replace(spec, model_file=onnx_path.name, sha256=sha256_of(onnx_path),
                                  provenance=provenance or {})
    dataclasses.replace(card, locator=section).save(card_path)
    return onnx_path


def locator_file(card: ModelCard) -> str:
    """The file a newly trained locator of `card` goes to: its present one when that was trained on the card's own
    label set (provenance "labelset"; locators that do not record it are FLARE21's), else `<card name>_locator.onnx`:
    the FLARE22 card borrows the FLARE21 cards' file, and a locator is never written over one trained for other organs."""
    spec = card.locator
    if spec is not None and spec.provenance.get("labelset", DEFAULT_LABELSET) == card.labelset:
        return Path(spec.model_file).name  # relative to the card's folder (load_card makes it absolute)
    return f"{card.name}_locator.onnx"


def run(data_dir: Path, card_path: Path, steps: int, seed: int, threads: int | None, recipe: str | None) -> Path:
    """`python -m abdoseg train-locator`: train on a FLARE folder, export beside the card, record the recipe."""
    from abdoseg.training.data import find_cases, read_canonical

    if threads:
        torch.set_num_threads(threads)
    card = ModelCard.from_dict(json.loads(Path(card_path).read_text()))
    spec = dataclasses.replace(card.locator or LocatorSpec(model_file="", sha256=None),
                               model_file=locator_file(card))
    cases = find_cases(Path(data_dir))
    scans = [read_canonical(case, labelset=card.labelset) for case in cases]  # the organs the card segments
    t0 = time.perf_counter()
    net, losses = train_locator(scans, spec, steps=steps, seed=seed)
    provenance = {"labelset": card.labelset, "recipe": recipe, "steps": steps, "seed": seed, "final_loss": round(float(np.mean(losses[-50:])), 5),
                  "training_wall_time_min": round((time.perf_counter() - t0) / 60, 2),
                  "parameters": int(sum(p.numel() for p in net.parameters())),
                  "training_data": [c.name for c in cases],
                  "augmentation": "random long variants (mirrored organ-free slices below/above, 0-1600 mm), "
                  "random cuts, organ-free-only scans, in-plane spacing x0.85-1.15, z spacing x0.8-1.25, shifts"}
    return export_locator(net, spec, card_path, name=Path(spec.model_file).stem, provenance=provenance)
