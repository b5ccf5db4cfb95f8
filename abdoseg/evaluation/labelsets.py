"""FLARE21 and FLARE22 label sets with the organisers' scoring rules (no heavy imports).

Ids and organ names come from the one definition the models use (abdoseg.inference.labels); this adds the scoring.
"""
from __future__ import annotations

from dataclasses import dataclass

from abdoseg.inference.labels import label_map


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


#: NSD tolerance (mm) of each FLARE22 organ, and the organs scored on the GT's axial slices only.
_FLARE22_TOLERANCE_MM = {"liver": 5.0, "right_kidney": 3.0, "spleen": 3.0, "pancreas": 5.0, "aorta": 2.0, "ivc": 2.0,
                         "right_adrenal": 2.0, "left_adrenal": 2.0, "gallbladder": 2.0, "esophagus": 3.0,
                         "stomach": 5.0, "duodenum": 7.0, "left_kidney": 3.0}
_GT_SLICES_ONLY = {"aorta", "ivc", "esophagus"}

FLARE21 = LabelSet(
    "flare21",
    tuple(Organ(label, name, 1.0) for label, name in label_map("flare21").organs.items()),
)

FLARE22 = LabelSet(
    "flare22",
    tuple(Organ(label, name, _FLARE22_TOLERANCE_MM[name], name in _GT_SLICES_ONLY)
          for label, name in label_map("flare22").organs.items()),
    nsd_min_dsc=0.2,
)

LABELSETS: dict[str, LabelSet] = {ls.name: ls for ls in (FLARE21, FLARE22)}


def get_labelset(name: str) -> LabelSet:
    """The label set called ``name`` (flare21 or flare22)."""
    try:
        return LABELSETS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; valid: {', '.join(LABELSETS)}") from None
