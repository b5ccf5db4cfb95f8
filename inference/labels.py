"""FLARE21 label map and the connected-component rule of the cleanup stage (no heavy imports)."""
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


#: The FLARE21 cleanup rule per label (measured in README "Component rule"): one liver and one spleen, the two
#: kidneys, the pancreas with a second piece when it is at least 0.3 of the largest or within 5 mm of it (the
#: COBRA peer's pancreas on abdpelvis3mm comes out in two pieces, the larger one wrong); pieces smaller than a
#: plausible organ part are stray false positives (e.g. "liver" of 0.6-23 ml in a pelvis-only scan).
KEEP_COMPONENTS: dict[int, ComponentRule] = {
    1: ComponentRule(keep=1, min_ml=30.0),
    2: ComponentRule(keep=2, min_ml=2.0),
    3: ComponentRule(keep=1, min_ml=2.0),
    4: ComponentRule(keep=1, extra=1, min_ratio=0.3, near_mm=5.0, min_ml=0.5),
}
