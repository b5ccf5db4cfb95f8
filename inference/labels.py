"""FLARE21 label map and the connected-component rule of the cleanup stage (no heavy imports)."""
from __future__ import annotations

from dataclasses import dataclass

FLARE21_LABELS: dict[int, str] = {0: "background", 1: "liver", 2: "kidneys", 3: "spleen", 4: "pancreas"}


@dataclass(frozen=True)
class ComponentRule:
    """Which connected pieces of one organ survive the cleanup.

    The `keep` largest pieces always stay; up to `extra` further pieces (largest first) stay when each is at
    least `min_ratio` times the largest piece, or lies within `near_mm` (bounding-box gap) of a piece kept.
    A plain integer in a card means `ComponentRule(keep=n)`.
    """

    keep: int
    extra: int = 0
    min_ratio: float = 1.0
    near_mm: float = 0.0

    def __post_init__(self) -> None:
        if self.keep < 1 or self.extra < 0 or not 0 <= self.min_ratio <= 1 or self.near_mm < 0:
            raise ValueError(f"component rule needs keep >= 1, extra >= 0, 0 <= min_ratio <= 1, near_mm >= 0: {self}")

    @classmethod
    def parse(cls, value: "int | dict | ComponentRule") -> "ComponentRule":
        """From a card's JSON value: an integer count or {"keep", "extra", "min_ratio", "near_mm"}."""
        if isinstance(value, ComponentRule):
            return value
        if isinstance(value, dict):
            return cls(int(value["keep"]), int(value.get("extra", 0)), float(value.get("min_ratio", 1.0)),
                       float(value.get("near_mm", 0.0)))
        return cls(int(value))

    def to_json(self) -> "int | dict":
        """The card's JSON form: a plain count when there is no extra rule."""
        if self.extra == 0:
            return self.keep
        return {"keep": self.keep, "extra": self.extra, "min_ratio": self.min_ratio, "near_mm": self.near_mm}


#: Connected components kept per label by the cleanup stage (kidneys: left and right).
KEEP_COMPONENTS: dict[int, int] = {1: 1, 2: 2, 3: 1, 4: 1}
