"""FLARE21 and FLARE22 label sets with the organisers' scoring rules (no heavy imports)."""
from __future__ import annotations

from dataclasses import dataclass

from inference.labels import FLARE21_LABELS


@dataclass(frozen=True)
class Organ:
    """One scored label: its NSD tolerance, and whether only the GT's axial slices of it are scored."""

    label: int
    name: str
    tolerance_mm: float
    gt_slices_only: bool = False


@dataclass(frozen=True)
class LabelSet:
    """Organs of a challenge; NSD is set to 0 where DSC < ``nsd_min_dsc`` (0.0: never)."""

    name: str
    organs: tuple[Organ, ...]
    nsd_min_dsc: float = 0.0


FLARE21 = LabelSet(
    "flare21",
    tuple(Organ(label, name, 1.0) for label, name in sorted(FLARE21_LABELS.items()) if label != 0),
)

FLARE22 = LabelSet(
    "flare22",
    (
        Organ(1, "liver", 5.0),
        Organ(2, "right_kidney", 3.0),
        Organ(3, "spleen", 3.0),
        Organ(4, "pancreas", 5.0),
        Organ(5, "aorta", 2.0, gt_slices_only=True),
        Organ(6, "ivc", 2.0, gt_slices_only=True),
        Organ(7, "right_adrenal", 2.0),
        Organ(8, "left_adrenal", 2.0),
        Organ(9, "gallbladder", 2.0),
        Organ(10, "esophagus", 3.0, gt_slices_only=True),
        Organ(11, "stomach", 5.0),
        Organ(12, "duodenum", 7.0),
        Organ(13, "left_kidney", 3.0),
    ),
    nsd_min_dsc=0.2,
)

LABELSETS: dict[str, LabelSet] = {ls.name: ls for ls in (FLARE21, FLARE22)}


def get_labelset(name: str) -> LabelSet:
    """The label set called ``name`` (flare21 or flare22)."""
    try:
        return LABELSETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; valid: {', '.join(LABELSETS)}") from None
