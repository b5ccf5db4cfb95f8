"""CSV output, per-organ summary table and box plots of accuracy scores (matplotlib loaded lazily)."""
from __future__ import annotations

import csv
import math
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from abdoseg.evaluation.accuracy import OrganScore

METRICS = ("dsc", "nsd")


@dataclass(frozen=True)
class OrganSummary:
    """Statistics of one organ over cases; NaN rows (errored cases) are left out and not counted in ``n``."""

    label: int
    organ: str
    n: int
    dsc_mean: float
    dsc_std: float
    dsc_median: float
    nsd_mean: float
    nsd_std: float
    nsd_median: float


def write_csv(path: Path, rows: Sequence[Any]) -> None:
    """Write dataclass ``rows`` (one type) to ``path`` with their field names as header; floats in full."""
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([field.name for field in fields(rows[0])])
        writer.writerows(astuple(row) for row in rows)


def summarize(scores: Iterable[OrganScore]) -> list[OrganSummary]:
    """Mean, population std and median of DSC and NSD per organ (in label order), then ``all`` (label 0)."""
    by_organ: dict[tuple[int, str], list[OrganScore]] = {}
    for s in scores:
        by_organ.setdefault((s.label, s.organ), []).append(s)
    groups = [(key, by_organ[key]) for key in sorted(by_organ)]
    groups.append(((0, "all"), [s for _, rows in groups for s in rows]))
    return [_summary(label, organ, rows) for (label, organ), rows in groups]


def format_summary(summaries: Sequence[OrganSummary]) -> str:
    """Plain-text table of ``summarize``'s output."""
    names = [f"{m}_{stat}" for m in METRICS for stat in ("mean", "std", "median")]
    header = f"{'organ':<16}{'n':>4}" + "".join(f"{name:>12}" for name in names)
    lines = [header, "-" * len(header)]
    for s in summaries:
        values = [getattr(s, name) for name in names]
        lines.append(f"{s.organ:<16}{s.n:>4}" + "".join(f"{v:>12.4f}" for v in values))
    return "\n".join(lines)


def plot_boxes(scores: Sequence[OrganScore], prefix: str) -> list[Path]:
    """One box-plot PNG per metric (``<prefix>_dsc.png``, ``<prefix>_nsd.png``), one box per organ."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    organs = sorted({(s.label, s.organ) for s in scores})
    paths = []
    for metric in METRICS:
        data = [[getattr(s, metric) for s in scores if (s.label, s.organ) == key and not math.isnan(getattr(s, metric))]
                for key in organs]
        fig = Figure(figsize=(max(4.0, 0.7 * len(organs) + 1.5), 4.0), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.boxplot(data, tick_labels=[name for _, name in organs])
        ax.set_ylabel(metric.upper())
        ax.set_title(f"{metric.upper()} per organ, {len({s.case for s in scores})} cases")
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(axis="x", labelrotation=45)
        ax.grid(axis="y", alpha=0.3)
        path = Path(f"{prefix}_{metric}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        paths.append(path)
    return paths


def _summary(label: int, organ: str, rows: list[OrganScore]) -> OrganSummary:
    stats: list[float] = []
    n = 0
    for metric in METRICS:
        values = np.array([getattr(r, metric) for r in rows], dtype=float)
        values = values[~np.isnan(values)]
        n = len(values)
        stats += [float(np.mean(values)), float(np.std(values)), float(np.median(values))] if n else [math.nan] * 3
    return OrganSummary(label, organ, n, *stats)
