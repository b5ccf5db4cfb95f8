"""Score label maps against ground truth per case and organ (DSC, NSD) with the FLARE rules.

Rules per organ (``score_case``): absent in both → DSC = NSD = 1; absent in exactly one → 0; organs with
``gt_slices_only`` (FLARE22 aorta, IVC, esophagus) are scored only on the GT's axial slices of that organ
(array axis 0, inclusive; the organisers' script slices ``z_lower:z_upper`` and so drops the top slice);
NSD = 0 where DSC < ``labelset.nsd_min_dsc``. A prediction must be on the GT's grid; nothing is resampled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from scipy import ndimage

from abdoseg.evaluation.labelsets import LabelSet, Organ
from abdoseg.evaluation.metrics import Spacing, dice, normalized_surface_dice

SUFFIX = ".nii.gz"
#: Tolerances for comparing grids read from two files (float32 headers): mm for spacing/origin.
_MM_TOL = 1e-4
_DIRECTION_TOL = 1e-6


@dataclass(frozen=True)
class OrganScore:
    """One CSV row. ``status``: ok | missing (prediction absent: scores 0) | error (scores NaN)."""

    case: str
    label: int
    organ: str
    dsc: float
    nsd: float
    status: str


@dataclass(frozen=True)
class CaseResult:
    """All organ rows of one case, and a one-line message when it was not scored (missing or error)."""

    case: str
    scores: tuple[OrganScore, ...]
    message: str | None = None


@dataclass(frozen=True)
class LabelImage:
    """A label map as a (z, y, x) integer array with its grid (SimpleITK order x, y, z for the grid)."""

    array: np.ndarray
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array axis order (z, y, x), in mm."""
        return tuple(reversed(self.spacing))  # type: ignore[return-value]


def score_organ(gt: np.ndarray, pred: np.ndarray, spacing: Spacing, organ: Organ,
                nsd_min_dsc: float = 0.0) -> tuple[float, float]:
    """(DSC, NSD) of ``organ`` in two label arrays (z, y, x) of one grid, ``spacing`` (z, y, x) in mm."""
    return _score_in_boxes(gt, pred, spacing, organ, nsd_min_dsc, _box(gt, organ.label), _box(pred, organ.label))


def score_case(gt: np.ndarray, pred: np.ndarray, spacing: Spacing, labelset: LabelSet) -> list[tuple[float, float]]:
    """(DSC, NSD) of every organ of ``labelset``, in its order, for label arrays (z, y, x) of one shape."""
    if gt.shape != pred.shape:
        raise ValueError(f"label arrays differ in shape: {gt.shape} vs {pred.shape}")
    max_label = max(o.label for o in labelset.organs)
    gt_boxes, pred_boxes = _boxes(gt, max_label), _boxes(pred, max_label)
    return [_score_in_boxes(gt, pred, spacing, o, labelset.nsd_min_dsc, gt_boxes[o.label - 1], pred_boxes[o.label - 1])
            for o in labelset.organs]


def _score_in_boxes(gt: np.ndarray, pred: np.ndarray, spacing: Spacing, organ: Organ, nsd_min_dsc: float,
                    gt_box: tuple[slice, ...] | None, pred_box: tuple[slice, ...] | None) -> tuple[float, float]:
    """The FLARE rules for one organ, given its bounding box in each array (None = absent)."""
    if gt_box is None and pred_box is None:
        return 1.0, 1.0
    if gt_box is None or pred_box is None:
        return 0.0, 0.0
    box = tuple(slice(min(g.start, p.start), max(g.stop, p.stop)) for g, p in zip(gt_box, pred_box))
    if organ.gt_slices_only:
        box = (gt_box[0],) + box[1:]
    gt_mask, pred_mask = gt[box] == organ.label, pred[box] == organ.label
    dsc = dice(gt_mask, pred_mask)
    if dsc < nsd_min_dsc:
        return dsc, 0.0
    return dsc, normalized_surface_dice(gt_mask, pred_mask, spacing, organ.tolerance_mm)


def read_labels(path: Path) -> LabelImage:
    """Read a 3-D integer label map; ValueError naming the file and reason when it cannot be used."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ValueError(f"{path}: cannot read image ({_reason(e)})") from e
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: expected a 3-D single-channel label map, got {image.GetDimension()}-D "
                         f"with {image.GetNumberOfComponentsPerPixel()} components")
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.array_equal(array, np.rint(array)):
            raise ValueError(f"{path}: label map has non-integer values (dtype {array.dtype})")
        array = np.rint(array).astype(np.int32)
    return LabelImage(array, image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def grid_mismatch(gt: LabelImage, pred: LabelImage) -> str | None:
    """Why ``pred`` is not on ``gt``'s grid (size, spacing, origin, direction), or None if it is."""
    if pred.size != gt.size:
        return f"size {pred.size} != ground truth {gt.size}"
    for name, tol in (("spacing", _MM_TOL), ("origin", _MM_TOL), ("direction", _DIRECTION_TOL)):
        p, g = getattr(pred, name), getattr(gt, name)
        if not np.allclose(p, g, rtol=0.0, atol=tol):
            return f"{name} {_fmt(p)} != ground truth {_fmt(g)}"
    return None


def evaluate_folders(pred_dir: Path, gt_dir: Path, labelset: LabelSet) -> Iterator[CaseResult]:
    """Score every ``*.nii.gz`` in ``gt_dir`` against the same file name in ``pred_dir``, case by case.

    Missing prediction → all organs 0 (status ``missing``); unreadable file or grid mismatch → NaN rows
    (status ``error``) with the reason in ``CaseResult.message``. Never raises for one bad case.
    """
    gt_paths = case_files(gt_dir)
    case_files(pred_dir)  # a prediction folder that is not there is a usage error, not N missing cases
    if not gt_paths:
        raise ValueError(f"{gt_dir}: no *{SUFFIX} ground-truth files")
    for gt_path in gt_paths:
        case = gt_path.name[: -len(SUFFIX)]
        pred_path = Path(pred_dir) / gt_path.name
        if not pred_path.exists():
            yield _constant_result(case, labelset, 0.0, "missing", f"{pred_path}: missing prediction, scored 0")
            continue
        try:
            gt = read_labels(gt_path)
            pred = read_labels(pred_path)
            reason = grid_mismatch(gt, pred)
            if reason is not None:
                raise ValueError(f"{pred_path}: not on the ground truth's grid: {reason}")
            values = score_case(gt.array, pred.array, gt.spacing_zyx, labelset)
        except ValueError as e:
            yield _constant_result(case, labelset, math.nan, "error", str(e))
            continue
        yield CaseResult(case, tuple(OrganScore(case, o.label, o.name, d, n, "ok")
                                     for o, (d, n) in zip(labelset.organs, values)))


def case_files(folder: Path) -> list[Path]:
    """Sorted ``*.nii.gz`` files of ``folder``; ValueError when it is not a directory."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory")
    return sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIX) and p.is_file())


def unmatched_predictions(pred_dir: Path, gt_dir: Path) -> list[str]:
    """File names in ``pred_dir`` with no ground truth of that name (they are not scored)."""
    gt_names = {p.name for p in case_files(gt_dir)}
    return [p.name for p in case_files(pred_dir) if p.name not in gt_names]


def _constant_result(case: str, labelset: LabelSet, value: float, status: str, reason: str) -> CaseResult:
    rows = tuple(OrganScore(case, o.label, o.name, value, value, status) for o in labelset.organs)
    return CaseResult(case, rows, reason)


def _boxes(labels: np.ndarray, max_label: int) -> list[tuple[slice, ...] | None]:
    """Bounding box of each label 1..max_label (None where absent)."""
    boxes = ndimage.find_objects(labels, max_label=max_label)
    return list(boxes) + [None] * (max_label - len(boxes))


def _box(labels: np.ndarray, label: int) -> tuple[slice, ...] | None:
    return _boxes(labels, label)[label - 1]


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _reason(error: Exception) -> str:
    """Last non-empty line of a SimpleITK error, without its ``sitk::ERROR:`` prefix."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1].removeprefix("sitk::ERROR:").strip() if lines else type(error).__name__
