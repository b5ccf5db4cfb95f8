"""Sharding a case list across independent jobs (`--shard INDEX/COUNT`, e.g. a Kubernetes Indexed Job).

Cases are sorted by name and shard INDEX takes every COUNT-th case starting at INDEX, so COUNT jobs with
INDEX = 0..COUNT-1 together cover every case exactly once, whatever order the folder lists them in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence, TypeVar

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= INDEX < COUNT and COUNT >= 1")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """'INDEX/COUNT' -> Shard; ValueError with the reason otherwise."""
        m = _SHARD.match(text)
        if not m:
            raise ValueError(f"shard {text!r}: expected INDEX/COUNT with whole numbers, e.g. 0/4")
        return cls(int(m[1]), int(m[2]))

    def select(self, items: Sequence[T], key=lambda item: item.name) -> list[T]:
        """This shard's share of `items`: sorted by `key` (the case name), every COUNT-th from INDEX."""
        return sorted(items, key=key)[self.index::self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
