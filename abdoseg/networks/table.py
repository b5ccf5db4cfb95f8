"""The architectures table printed by `python -m abdoseg architectures`."""
from __future__ import annotations

from dataclasses import dataclass

from abdoseg.networks.flops import spec_gmacs
from abdoseg.networks.registry import ARCHITECTURES, build, count_parameters


@dataclass(frozen=True)
class Row:
    """One architecture's line of the table."""

    name: str
    seed: str
    parameters: int
    paper_parameters: int | None
    gmacs: float
    paper_gflops: float | None
    geometry: str


def rows(width: float = 1.0) -> list[Row]:
    """One row per registered architecture at `width` (the COBRA net has only width 1)."""
    out = []
    for spec in ARCHITECTURES.values():
        w = 1.0 if spec.name == "cobra" else width
        out.append(Row(spec.name, spec.seed, count_parameters(build(spec.name, width=w)), spec.paper_parameters,
                       spec_gmacs(spec, w), spec.paper_gflops, spec.geometry))
    return out


def format_table(table: list[Row]) -> str:
    """Fixed-width text table; GFLOPs counted as multiply-adds (the papers' fvcore convention)."""
    head = ("name", "seed", "parameters", "paper params", "GFLOPs (MAC)", "paper GFLOPs", "input (GFLOPs per)")
    body = [(r.name, r.seed, f"{r.parameters:,}", "" if r.paper_parameters is None else f"{r.paper_parameters:,}",
             f"{r.gmacs:.1f}", "" if r.paper_gflops is None else f"{r.paper_gflops:.1f}", r.geometry) for r in table]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]

    def fmt(line: tuple[str, ...]) -> str:  # numbers right-aligned
        return "  ".join(c.rjust(w) if 2 <= i <= 5 else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip()

    return "\n".join([fmt(head), fmt(tuple("-" * w for w in widths)), *map(fmt, body)])
