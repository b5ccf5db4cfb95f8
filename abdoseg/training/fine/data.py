"""Training samples for the fine network: the real scans on the fine grid, through abdoseg.inference.fine's own
preprocessing (`prepare_image` / `prepare_labels`), cropped as at inference (organ box + the card's margin),
with the reference labels standing in for the coarse model's."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from abdoseg.inference.card import Spacing3, Window
from abdoseg.inference.fine.card import FineCard
from abdoseg.inference.fine.crop import organ_box
from abdoseg.inference.fine.preprocess import prepare_image, prepare_labels
from abdoseg.inference.labels import label_map
from abdoseg.training.data import Case, read_canonical

CANONICAL = "RAS"


@dataclass(frozen=True)
class Scan:
    """A labelled scan on the canonical full-resolution grid: HU and labels [z, y, x], spacing (z, y, x) mm."""

    name: str
    ct: np.ndarray
    labels: np.ndarray
    spacing: Spacing3


@dataclass(frozen=True)
class FineSample:
    """A scan's organ crop on the fine grid: image float32 [C, D, H, W], labels int64 [D, H, W]."""

    name: str
    image: torch.Tensor
    labels: torch.Tensor


def find_pairs(data_dir: Path, split: str = "Tr") -> list[tuple[str, Path, Path]]:
    """(case, image, labels) for every images<split>/<case>_0000.nii.gz with a labels<split>/<case>.nii.gz."""
    images = sorted(Path(data_dir, f"images{split}").glob("*_0000.nii.gz"))
    pairs = []
    for image in images:
        case = image.name[: -len("_0000.nii.gz")]
        label = Path(data_dir, f"labels{split}", f"{case}.nii.gz")
        if label.is_file():
            pairs.append((case, image, label))
    if not pairs:
        raise ValueError(f"{data_dir}: no images{split}/<case>_0000.nii.gz with a matching labels{split}/<case>.nii.gz")
    return pairs


def read_scan_pair(case: str, image_path: Path, label_path: Path) -> Scan:
    """Read a scan and its labels (same grid required) in the canonical orientation, the HU as int16 exactly as
    the inference pipeline hands them to the fine stage (abdoseg.training.data.read_canonical)."""
    hu, labels, spacing = read_canonical(Case(case, Path(image_path), Path(label_path)), CANONICAL)
    return Scan(case, hu, labels, spacing)


def global_intensity(scans: list[Scan], window: Window) -> tuple[float, float]:
    """(mean, std) of the organ voxels' HU over all `scans`, each clipped to `window` (seed 001's global
    statistics for the fine model's normalisation; the card records them)."""
    total, total_sq, count = 0.0, 0.0, 0
    for scan in scans:
        values = np.clip(scan.ct[scan.labels > 0].astype(np.float64), window.low, window.high)
        total, total_sq, count = total + values.sum(), total_sq + np.square(values).sum(), count + values.size
    if count == 0:
        raise ValueError("no organ voxel in the training scans: no global intensity statistics")
    mean = total / count
    return round(float(mean), 3), round(float(np.sqrt(max(total_sq / count - mean**2, 1e-6))), 3)


def fine_sample(scan: Scan, card: FineCard) -> FineSample:
    """The scan's organ box (reference labels + card margin) on the fine grid, as the fine stage sees it."""
    box = organ_box(scan.labels, scan.spacing, card.margin_mm)
    if box is None:
        raise ValueError(f"{scan.name}: no organ in the reference labels")
    if int(scan.labels.max()) > label_map(card.labelset).max_label:
        raise ValueError(f"{scan.name}: label {int(scan.labels.max())} is not in the card's label set {card.labelset}")
    image = prepare_image(scan.ct[box.slices], scan.spacing, card.spacing, card.windows, "cpu", card.global_intensity)
    labels = prepare_labels(scan.labels[box.slices], scan.spacing, card.spacing)
    return FineSample(scan.name, image, torch.from_numpy(labels.astype(np.int64)))
