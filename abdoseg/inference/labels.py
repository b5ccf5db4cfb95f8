"""Label sets (id -> organ name, and the connected-component rule of the cleanup stage per organ) as data.

A model card names its label set (`ModelCard.labelset`); the pipeline, post-processing, logs, training, export
and evaluation read names and rules from `label_map(name)`. No heavy imports.
"""
from __future__ import annotations

from dataclasses import dataclass

FLARE21_LABELS: dict[int, str] = {0: "background", 1: "liver", 2: "kidneys", 3: "spleen", 4: "pancreas"}


@dataclass(frozen=True)
class ComponentRule:
    """Which connected pieces of one organ survive the cleanup.

    Pieces smaller than `min_ml` never stay (stray false positives, e.g. "liver" in a pelvis-only scan). Of the
    rest, the `keep` largest stay; up to `extra` further pieces (largest first) stay when each is at least
    `min_ratio` times the largest piece, or lies within `near_mm` (bounding-box gap) of a piece kept.
    A plain integer in a card means `ComponentRule(keep=n)`.
    """

    keep: int
    extra: int = 0
    min_ratio: float = 1.0
    near_mm: float = 0.0
    min_ml: float = 0.0

    def __post_init__(self) -> None:
        if self.keep < 1 or self.extra < 0 or not 0 <= self.min_ratio <= 1 or self.near_mm < 0 or self.min_ml < 0:
            raise ValueError("component rule needs keep >= 1, extra >= 0, 0 <= min_ratio <= 1, near_mm >= 0, "
                             f"min_ml >= 0: {self}")

    @classmethod
    def parse(cls, value: "int | dict | ComponentRule") -> "ComponentRule":
        """From a card's JSON value: an integer count or {"keep", "extra", "min_ratio", "near_mm", "min_ml"}."""
        if isinstance(value, ComponentRule):
            return value
        if isinstance(value, dict):
            return cls(int(value["keep"]), int(value.get("extra", 0)), float(value.get("min_ratio", 1.0)),
                       float(value.get("near_mm", 0.0)), float(value.get("min_ml", 0.0)))
        return cls(int(value))

    def to_json(self) -> "int | dict":
        """The card's JSON form: a plain count when there is no other rule."""
        if self.extra == 0 and self.min_ml == 0:
            return self.keep
        return {"keep": self.keep, "extra": self.extra, "min_ratio": self.min_ratio, "near_mm": self.near_mm,
                "min_ml": self.min_ml}


#: The FLARE21 cleanup rule per label (measured: docs/pipeline.md, "Component rule"): one liver and one spleen, the two
#: kidneys, the pancreas with a second piece when it is at least 0.3 of the largest or within 5 mm of it (the
#: COBRA peer's pancreas on abdpelvis3mm comes out in two pieces, the larger one wrong); pieces smaller than a
#: plausible organ part are stray false positives (e.g. "liver" of 0.6-23 ml in a pelvis-only scan).
KEEP_COMPONENTS: dict[int, ComponentRule] = {
    1: ComponentRule(keep=1, min_ml=30.0),
    2: ComponentRule(keep=2, min_ml=2.0),
    3: ComponentRule(keep=1, min_ml=2.0),
    4: ComponentRule(keep=1, extra=1, min_ratio=0.3, near_mm=5.0, min_ml=0.5),
}


#: FLARE22's 13 organs (names as abdoseg.evaluation.labelsets scores them).
FLARE22_LABELS: dict[int, str] = {
    0: "background", 1: "liver", 2: "right_kidney", 3: "spleen", 4: "pancreas", 5: "aorta", 6: "ivc",
    7: "right_adrenal", 8: "left_adrenal", 9: "gallbladder", 10: "esophagus", 11: "stomach", 12: "duodenum",
    13: "left_kidney",
}

#: The FLARE22 cleanup rule: each organ is one connected piece, so each keeps its largest (each kidney 1, as
#: the two kidneys are separate labels). Minimum volumes drop stray specks: the FLARE21 figures for liver,
#: kidneys, spleen and pancreas (whose second-piece rule is kept); 1 ml for the long vessels and stomach, whose
#: pieces in a scan are large; 0.1 ml for the adrenals, the smallest organs (about 4-6 ml, thin). The duodenum
#: (a curved tube that thin partial-volume slices may cut) keeps a second piece on the pancreas rule.
FLARE22_KEEP_COMPONENTS: dict[int, ComponentRule] = {
    1: KEEP_COMPONENTS[1], 2: ComponentRule(keep=1, min_ml=2.0), 3: KEEP_COMPONENTS[3], 4: KEEP_COMPONENTS[4],
    5: ComponentRule(keep=1, min_ml=1.0), 6: ComponentRule(keep=1, min_ml=1.0),
    7: ComponentRule(keep=1, min_ml=0.1), 8: ComponentRule(keep=1, min_ml=0.1),
    9: ComponentRule(keep=1, min_ml=0.5), 10: ComponentRule(keep=1, min_ml=0.5), 11: ComponentRule(keep=1, min_ml=1.0),
    12: ComponentRule(keep=1, extra=1, min_ratio=0.3, near_mm=5.0, min_ml=0.5), 13: ComponentRule(keep=1, min_ml=2.0),
}


@dataclass(frozen=True)
class LabelMap:
    """A label set: `names` id -> organ name (0: background) and the component rule of each organ."""

    name: str
    names: dict[int, str]
    keep_components: dict[int, ComponentRule]

    @property
    def organs(self) -> dict[int, str]:
        """id -> name of the organs (background left out), in id order."""
        return {k: v for k, v in sorted(self.names.items()) if k != 0}

    @property
    def max_label(self) -> int:
        return max(self.names)


LABEL_MAPS: dict[str, LabelMap] = {
    "flare21": LabelMap("flare21", FLARE21_LABELS, KEEP_COMPONENTS),
    "flare22": LabelMap("flare22", FLARE22_LABELS, FLARE22_KEEP_COMPONENTS),
}
#: A card that names no label set means this one (the cards written before label sets were data).
DEFAULT_LABELSET = "flare21"


def label_map(name: str) -> LabelMap:
    """The label set called `name`; ValueError naming the valid ones otherwise."""
    try:
        return LABEL_MAPS[name]
    except KeyError:
        raise ValueError(f"unknown label set {name!r}; valid: {', '.join(LABEL_MAPS)}") from None
