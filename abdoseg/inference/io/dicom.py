"""DICOM series input: a case may be a folder holding one CT series, its files at any depth and of any name.

Files are recognised by content (abdoseg.inference.io.dicom_files: preamble or not); other files are ignored, and so
are DICOM objects that are not slices (SEG, RTSTRUCT, DICOMDIR, reports) and scouts (ImageType LOCALIZER). Slices are
grouped by SeriesInstanceUID; the CT series with the most slices is taken (a tie is refused as ambiguous). Its
slices are checked on their headers (one size, one pixel spacing, one orientation, stacked along their normal,
evenly spaced, no two at one position; a copy of an instance already seen is dropped) and sorted along the normal;
then SimpleITK (GDCM) reads the pixels in that order, rescale slope/intercept applied (HU), its warnings silenced.
Every refusal is one line naming the file(s) and the cause. Nothing is resampled: the geometry is the series' own.
"""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abdoseg.inference.io.dicom_files import Other, Slice, dicom_files_below, read_dicom_header
from abdoseg.inference.io.errors import InputError, shown

#: Tolerances: positions (mm) and the relative spread of slice gaps (orientations and pixel spacings: 4 decimals).
_MM_TOL, _GAP_REL_TOL = 1e-3, 0.01


@dataclass
class Series:
    """One CT series as an image, with its files in slice order (z index 0 first) and any notes for the user."""

    image: sitk.Image
    files: list[Path]
    series_uid: str
    notes: list[str] = field(default_factory=list)


def series_case_name(folder: Path) -> str:
    """The case name of a series folder: its name, without a trailing `_0000` (FLARE's channel suffix)."""
    name = Path(folder).name
    return name[: -len("_0000")] if name.endswith("_0000") and len(name) > 5 else name


def _names(paths: list[Path], folder: Path, most: int = 3) -> str:
    """File names relative to the case folder, the first `most` of them."""
    shown_paths = [shown(p.relative_to(folder) if p.is_relative_to(folder) else p) for p in paths[:most]]
    return ", ".join(shown_paths) + (f" and {len(paths) - most} more" if len(paths) > most else "")


def _what_else(groups: dict[str, list[Slice]], others: list[Other]) -> str:
    """'MR 20 slices, RT Structure Set Storage 1 file': what a folder holds besides the chosen series."""
    parts = [f"{'CT localizer' if s[0].localizer else s[0].modality} {len(s)} slice(s)" for s in groups.values()]
    parts += [f"{kind} {n} file(s)" for kind, n in Counter(o.kind for o in others).items()]
    return ", ".join(parts) or "nothing else"


def choose_series(folder: Path, slices: list[Slice], others: list[Other]) -> tuple[list[Slice], list[str]]:
    """The slices of the CT series with the most slices (scouts left out), and notes on what else was found."""
    groups: dict[str, list[Slice]] = {}
    for s in slices:
        groups.setdefault(s.series_uid, []).append(s)
    candidates = {uid: [s for s in group if not s.localizer] for uid, group in groups.items()
                  if group[0].modality == "CT"}
    candidates = {uid: group for uid, group in candidates.items() if group}
    if not candidates:
        raise InputError(f"{shown(folder)}: no CT image series (found: {_what_else(groups, others)}); "
                         "abdoseg segments CT only")
    most = max(len(g) for g in candidates.values())
    best = [uid for uid, g in candidates.items() if len(g) == most]
    if len(best) > 1:
        raise InputError(f"{shown(folder)}: {len(best)} CT series with {most} slices each (series "
                         f"{', '.join(uid or '(no UID)' for uid in best[:3])}): ambiguous, keep one of them")
    uid = best[0]
    rest = {u: g for u, g in groups.items() if u != uid}
    scouts = [s for s in groups[uid] if s.localizer]
    if scouts:
        rest[f"{uid}-scouts"] = scouts
    notes = []
    if rest or others:
        count = f"{len(groups)} series in this folder; " if len(groups) > 1 else ""
        notes.append(f"{count}took the CT series {uid or '(no UID)'} with {most} slices (also found: "
                     f"{_what_else(rest, others)})")
    return candidates[uid], notes


def _unique(folder: Path, values: list, slices: list[Slice], what: str) -> None:
    """InputError when `values` (one per slice) are not all equal, naming the files in the minority."""
    counts = Counter(values)
    if len(counts) <= 1:
        return
    common = counts.most_common(1)[0][0]
    odd = [s.path for s, v in zip(slices, values) if v != common]
    found = ", ".join(f"{_fmt(v)} ({n} file(s))" for v, n in counts.most_common(3))
    raise InputError(f"{shown(folder)}: mixed {what} in one series: {found}; differing: {_names(odd, folder)}")


def _fmt(value) -> str:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[1]}x{value[0]}"  # columns x rows
    return "(" + ", ".join(f"{v:g}" for v in value) + ")" if isinstance(value, tuple) else str(value)


def stack_slices(folder: Path, slices: list[Slice]) -> tuple[list[Slice], list[str]]:
    """The series' slices sorted along their normal, copies of one instance dropped, and notes; InputError with
    the files concerned when they do not form one evenly spaced stack."""
    _unique(folder, [s.size for s in slices], slices, "slice sizes (columns x rows)")
    _unique(folder, [tuple(float(v) for v in np.round(s.spacing, 4)) if s.spacing else None for s in slices], slices,
            "pixel spacing")
    _unique(folder, [tuple(float(v) for v in np.round(s.orientation, 4)) for s in slices], slices, "orientations")
    row, col = np.asarray(slices[0].orientation[:3]), np.asarray(slices[0].orientation[3:])
    normal = np.cross(row, col)
    along = np.array([np.dot(s.position, normal) for s in slices])
    order = np.argsort(along, kind="stable")
    slices, along = [slices[k] for k in order], along[order]
    kept, notes, copies = [0], [], []
    for k in range(1, len(slices)):
        if abs(along[k] - along[kept[-1]]) >= _MM_TOL:
            kept.append(k)
        elif slices[k].sop_uid and slices[k].sop_uid == slices[kept[-1]].sop_uid:
            copies.append(slices[k].path)  # the same instance stored twice: one is enough
        else:
            a, b = slices[kept[-1]], slices[k]
            raise InputError(f"{shown(folder)}: duplicate slice position {_fmt(a.position)} mm under two SOP "
                             f"instance UIDs (files {_names([a.path, b.path], folder)})")
    if copies:
        notes.append(f"{len(copies)} file(s) repeat an instance already read, ignored: {_names(copies, folder)}")
    slices, along = [slices[k] for k in kept], along[kept]
    _check_spacing(folder, slices, along, normal)
    return slices, notes


def _check_spacing(folder: Path, slices: list[Slice], along: np.ndarray, normal: np.ndarray) -> None:
    if len(slices) < 2:
        raise InputError(f"{shown(folder)}: a single slice ({_names([slices[0].path], folder)}), not a volume")
    positions = np.array([s.position for s in slices])
    offsets = positions - positions[0]
    off_normal = np.abs(offsets - np.outer(along - along[0], normal)).max(axis=1)
    if off_normal.max() > 10 * _MM_TOL:
        worst = slices[int(np.argmax(off_normal))].path
        raise InputError(f"{shown(folder)}: slices not stacked along their normal (gantry tilt or mixed stacks; "
                         f"{off_normal.max():.2f} mm off at {_names([worst], folder)})")
    gaps = np.diff(along)
    median = float(np.median(gaps))
    if gaps.max() - gaps.min() > _GAP_REL_TOL * median + _MM_TOL:
        k = int(np.argmax(np.abs(gaps - median)))
        missing = int(np.round(gaps / median).sum() - len(gaps))
        hint = f"; about {missing} slice(s) missing" if missing > 0 else ""
        raise InputError(f"{shown(folder)}: unevenly spaced slices (gaps {gaps.min():.3f} to {gaps.max():.3f} mm, "
                         f"typically {median:.3f}; a {gaps[k]:.3f} mm gap between "
                         f"{_names([slices[k].path], folder)} and {_names([slices[k + 1].path], folder)}{hint})")


def _check_voxel_count(folder: Path, slices: list[Slice]) -> None:
    """The same cap as for scan files (abdoseg.inference.io.headers.MAX_VOXELS), before any voxel is read."""
    from abdoseg.inference.io.headers import MAX_VOXELS

    rows, columns = slices[0].size
    if columns * rows * len(slices) > MAX_VOXELS:
        raise InputError(f"{shown(folder)}: {columns}x{rows}x{len(slices)} voxels, more than the maximum "
                         f"{MAX_VOXELS:,} (2^28) this product accepts")


@contextmanager
def _itk_warnings_off():
    """ITK prints its warnings (e.g. ImageSeriesReader's on spacing) on stderr: the checks here say it in words."""
    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(before)


def _read_pixels(folder: Path, files: list[Path]) -> sitk.Image:
    """The slices' pixels in this order (HU); InputError naming the file GDCM cannot decode."""
    from abdoseg.inference.io.read import _itk_name, _release, itk_reason

    names = [_itk_name(p) for p in files]
    try:
        with _itk_warnings_off():
            reader = sitk.ImageSeriesReader()
            reader.SetImageIO("GDCMImageIO")  # named: its CanReadFile refuses some files without preamble it reads
            reader.SetFileNames(names)
            try:
                return reader.Execute()
            except RuntimeError as e:
                for path, name in zip(files, names):  # which slice: read each on its own
                    try:
                        sitk.ReadImage(name, imageIO="GDCMImageIO")
                    except RuntimeError as one:
                        raise InputError(f"{shown(path)}: GDCM cannot decode this slice "
                                         f"({itk_reason(one).split(' for ')[0]})") from e
                raise InputError(f"{shown(folder)}: the DICOM series cannot be read ({itk_reason(e)})") from e
    finally:
        for name in names:
            _release(name)


def read_series(folder: Path) -> Series:
    """The CT series of `folder` as a SimpleITK image (InputError with one line when it cannot be used)."""
    folder = Path(folder)
    files = dicom_files_below(folder)
    if not files:
        raise InputError(f"{shown(folder)}: no DICOM files in this folder")
    headers = [read_dicom_header(f) for f in files]
    slices = [h for h in headers if isinstance(h, Slice)]
    chosen, notes = choose_series(folder, slices, [h for h in headers if isinstance(h, Other)])
    chosen, stack_notes = stack_slices(folder, chosen)
    _check_voxel_count(folder, chosen)
    image = _read_pixels(folder, [s.path for s in chosen])
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{shown(folder)}: not a scalar 3D series")
    return Series(image, [s.path for s in chosen], chosen[0].series_uid, notes + stack_notes)
