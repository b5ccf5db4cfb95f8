"""The held-out report: a patient the network never saw, scored per organ with volumes beside the overlap.

DSC and NSD alone cannot tell a clean miss from a network that paints an organ where there is none: an organ
absent from the reference scores 0 whether one voxel or a litre is predicted. So each row also gives the
reference and predicted volumes and the false-positive volume (predicted voxels of the organ outside the
reference's organ, in ml); where the organ is absent from the reference, that is the whole prediction.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from abdoseg.evaluation.accuracy import LabelImage, grid_mismatch, read_labels, score_case
from abdoseg.evaluation.labelsets import LabelSet


@dataclass(frozen=True)
class HeldOutScore:
    """One organ of one held-out case: FLARE-rule DSC and NSD, and volumes in ml."""

    case: str
    label: int
    organ: str
    dsc: float
    nsd: float
    reference_ml: float
    predicted_ml: float
    false_positive_ml: float

    @property
    def absent(self) -> bool:
        """The organ is not in the reference: only its false-positive volume says anything."""
        return self.reference_ml == 0.0


def score_held_out(case: str, gt: LabelImage, pred: LabelImage, labelset: LabelSet) -> list[HeldOutScore]:
    """Every organ of `labelset` in `pred` against `gt` (one grid; ValueError naming the mismatch otherwise)."""
    reason = grid_mismatch(gt, pred)
    if reason is not None:
        raise ValueError(f"{case}: prediction not on the reference's grid: {reason}")
    voxel_ml = float(np.prod(gt.spacing)) / 1000.0
    overlap = score_case(gt.array, pred.array, gt.spacing_zyx, labelset)
    rows = []
    for organ, (dsc, nsd) in zip(labelset.organs, overlap):
        ref, hit = gt.array == organ.label, pred.array == organ.label
        rows.append(HeldOutScore(case, organ.label, organ.name, dsc, nsd, int(ref.sum()) * voxel_ml,
                                 int(hit.sum()) * voxel_ml, int((hit & ~ref).sum()) * voxel_ml))
    return rows


def score_held_out_files(case: str, gt_path: Path, pred_path: Path, labelset: LabelSet) -> list[HeldOutScore]:
    """`score_held_out` of two label files."""
    return score_held_out(case, read_labels(gt_path), read_labels(pred_path), labelset)


def format_held_out(rows: Sequence[HeldOutScore]) -> str:
    """Plain-text table: one line per case and organ; absent organs show their false-positive volume only."""
    header = f"{'case':<16}{'organ':<12}{'DSC':>8}{'NSD':>8}{'ref ml':>10}{'pred ml':>10}{'FP ml':>10}"
    lines = [header, "-" * len(header)]
    for r in rows:
        overlap = f"{'absent':>8}{'':>8}" if r.absent else f"{r.dsc:>8.3f}{r.nsd:>8.3f}"
        lines.append(f"{r.case:<16}{r.organ:<12}{overlap}{r.reference_ml:>10.1f}{r.predicted_ml:>10.1f}"
                     f"{r.false_positive_ml:>10.1f}")
    return "\n".join(lines)


def write_report(path: Path, rows: Sequence[HeldOutScore], context: dict) -> None:
    """The report as JSON (atomically): `context` (what was trained on, budget, CPU) and one object per row."""
    path = Path(path)
    payload = {**context, "organs": [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                      for k, v in asdict(r).items()} for r in rows]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
