"""DICOM series input: a case may be a folder `IN/<case>/` holding the files of one CT series (any file names).

Read with SimpleITK's series reader (GDCM): series found by SeriesInstanceUID, slices sorted by position along
the slice normal, rescale slope/intercept applied (HU). A folder with several series: the CT series with the most
slices is taken, with a note. Refused with one line naming the folder and the reason: no DICOM series, no CT series,
a single slice, mixed orientations, duplicate or unevenly spaced slices (a missing slice shows as a double gap),
slices not stacked along their normal (gantry tilt). Nothing is resampled, so the geometry is the series' own.
No pydicom here: reading needs only the runtime; the DICOM outputs (abdoseg.inference.outputs.dicom) need the [dicom]
extra.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: DICOM Part 10 files carry "DICM" after a 128-byte preamble.
_DICM_OFFSET, _DICM = 128, b"DICM"
_FILES_SNIFFED = 16
#: Tolerances: orientation cosines, positions (mm), and the relative spread of slice gaps.
_COSINE_TOL, _MM_TOL, _GAP_REL_TOL = 1e-4, 1e-3, 0.01


@dataclass
class Series:
    """One CT series as an image, with its files in slice order (z index 0 first) and any notes for the user."""

    image: sitk.Image
    files: list[Path]
    series_uid: str
    notes: list[str] = field(default_factory=list)


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(_DICM_OFFSET)
            return f.read(4) == _DICM
    except OSError:
        return False


def is_series_folder(path: Path) -> bool:
    """A visible folder with a DICOM Part 10 file among its first files (by name): a DICOM case."""
    path = Path(path)
    if path.name.startswith(".") or not path.is_dir():
        return False
    try:
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        return False
    return any(_is_dicom_file(p) for p in files[:_FILES_SNIFFED])


def series_case_name(folder: Path) -> str:
    """The case name of a series folder: its name, without a trailing `_0000` (FLARE's channel suffix)."""
    name = Path(folder).name
    return name[: -len("_0000")] if name.endswith("_0000") and len(name) > 5 else name


def _modality(first_file: str) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(first_file)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return "unreadable"
    return reader.GetMetaData("0008|0060").strip() if reader.HasMetaDataKey("0008|0060") else "unknown"


def _choose_series(folder: Path) -> tuple[str, list[str], list[str]]:
    """(series UID, its files sorted by position, notes): the CT series with the most slices."""
    from abdoseg.inference.io.errors import InputError, shown

    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError:
        uids = ()
    if not uids:
        raise InputError(f"{shown(folder)}: no DICOM series in this folder")
    found = []
    for uid in uids:
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        found.append((uid, files, _modality(files[0])))
    ct = [s for s in found if s[2] == "CT"]
    if not ct:
        kinds = ", ".join(sorted({s[2] for s in found}))
        raise InputError(f"{shown(folder)}: no CT series (modality {kinds}); abdoseg segments CT only")
    uid, files, _ = max(ct, key=lambda s: len(s[1]))
    notes = _unread_files_note(folder, {Path(f).name for s in found for f in s[1]})
    if len(found) > 1:
        others = ", ".join(f"{s[2]} {len(s[1])} slice(s)" for s in found if s[0] != uid)
        notes.append(f"{len(found)} series in this folder; took the CT series {uid or '(no UID)'} with "
                     f"{len(files)} slices (the others: {others})")
    return uid, files, notes


def _unread_files_note(folder: Path, used: set[str]) -> list[str]:
    """A note naming the DICOM files GDCM put in no series (corrupt, truncated, or not images), if any."""
    from abdoseg.inference.io.errors import shown

    unread = sorted(p.name for p in folder.iterdir()
                    if p.is_file() and p.name not in used and not p.name.startswith(".") and _is_dicom_file(p))
    if not unread:
        return []
    listed = ", ".join(shown(n) for n in unread[:3]) + (", ..." if len(unread) > 3 else "")
    return [f"{len(unread)} DICOM file(s) in no readable series (corrupt, truncated or not an image), ignored: "
            f"{listed}"]


def _check_voxel_count(folder: Path, files: list[str]) -> None:
    """The same cap as for scan files (abdoseg.inference.io.headers.MAX_VOXELS), before any voxel is read."""
    from abdoseg.inference.io.errors import InputError, shown
    from abdoseg.inference.io.headers import MAX_VOXELS

    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    reader.ReadImageInformation()
    columns, rows = reader.GetSize()[:2]
    if columns * rows * len(files) > MAX_VOXELS:
        raise InputError(f"{shown(folder)}: {columns}x{rows}x{len(files)} voxels, more than the maximum "
                         f"{MAX_VOXELS:,} (2^28) this product accepts")


def _slice_problem(orientations: np.ndarray, positions: np.ndarray) -> str | None:
    """Why these slices (in reading order) do not form one evenly spaced stack, or None."""
    if len(positions) < 2:
        return "a single slice, not a volume"
    distinct = np.unique(np.round(orientations / _COSINE_TOL).astype(np.int64), axis=0)
    if len(distinct) > 1:
        return f"mixed orientations ({len(distinct)} different image orientations in one series)"
    row, col = orientations[0, :3], orientations[0, 3:]
    normal = np.cross(row, col)
    offsets = positions - positions[0]
    along = offsets @ normal
    if np.abs(offsets - np.outer(along, normal)).max() > 10 * _MM_TOL:
        return "slices not stacked along their normal (gantry tilt or mixed stacks)"
    gaps = np.abs(np.diff(along))
    if gaps.min() < _MM_TOL:
        return f"duplicate slice positions ({int((gaps < _MM_TOL).sum())} slice(s) at an occupied position)"
    median = float(np.median(gaps))
    if gaps.max() - gaps.min() > _GAP_REL_TOL * median + _MM_TOL:
        missing = int(np.round(gaps / median).sum() - len(gaps))
        hint = f"; about {missing} slice(s) missing" if missing > 0 else ""
        return f"unevenly spaced slices (gaps {gaps.min():.3f} to {gaps.max():.3f} mm{hint})"
    return None


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.strip().split("\\")]


def read_series(folder: Path) -> Series:
    """The CT series of `folder` as a SimpleITK image (InputError with one line when it cannot be used)."""
    from abdoseg.inference.io.errors import InputError, shown

    folder = Path(folder)
    uid, files, notes = _choose_series(folder)
    _check_voxel_count(folder, files)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as e:
        reason = (str(e).strip().splitlines() or ["unreadable"])[-1][:160]
        raise InputError(f"{shown(folder)}: the DICOM series cannot be read ({reason})") from e
    try:
        orientations = np.array([_floats(reader.GetMetaData(i, "0020|0037")) for i in range(len(files))])
        positions = np.array([_floats(reader.GetMetaData(i, "0020|0032")) for i in range(len(files))])
    except (RuntimeError, ValueError) as e:
        raise InputError(f"{shown(folder)}: slices without a readable position or orientation") from e
    problem = _slice_problem(orientations, positions)
    if problem:
        raise InputError(f"{shown(folder)}: {problem}")
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{shown(folder)}: not a scalar 3D series")
    return Series(image, [Path(f) for f in files], uid, notes)
