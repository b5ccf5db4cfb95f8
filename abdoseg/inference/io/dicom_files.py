"""The DICOM files of a folder, recognised by their content, and what each one is (header read with pydicom).

A file is DICOM when it carries "DICM" after the 128-byte preamble (Part 10), or, without a preamble (as older
systems write them), when its first element is a group 0002 or 0008 tag, the test GDCM's reader makes. Names,
extensions and depth below the folder do not matter; hidden files and folders are skipped. Each file's header (not
its pixels) says what it is: a `Slice` of an image series, another object (`Other`: SEG, RTSTRUCT, DICOMDIR,
reports, multi-frame images; never segmented), or a broken file, refused with an InputError naming it and why
(truncated before or inside its pixel data, unreadable header).
"""
from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

from abdoseg.inference.io.errors import InputError, shown

_DICM_OFFSET, _DICM = 128, b"DICM"
_FIRST_GROUPS = (0x0002, 0x0008)  # file meta, or the identifying group of a dataset written without one
_VRS = {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
        b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
        b"UR", b"US", b"UT", b"UV"}
_UNDEFINED_LENGTH = 0xFFFFFFFF
_SEQUENCE_END_LE = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), length 0: the end of encapsulated pixel data


@dataclass(frozen=True)
class Slice:
    """One single-frame image with a position: a slice of a series."""

    path: Path
    series_uid: str
    sop_uid: str
    modality: str
    localizer: bool  # ImageType says LOCALIZER (a scout)
    size: tuple[int, int]  # rows, columns
    position: tuple[float, float, float]  # ImagePositionPatient (mm)
    orientation: tuple[float, ...]  # ImageOrientationPatient: row and column cosines
    spacing: tuple[float, float] | None  # PixelSpacing (row, column; mm)


@dataclass(frozen=True)
class Other:
    """A DICOM object that is not a slice (what it is, for messages)."""

    path: Path
    kind: str


def is_dicom_file(path: Path) -> bool:
    """True for a DICOM file, with or without its preamble (see the module docstring)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_DICM_OFFSET + 4)
    except OSError:
        return False
    return _looks_like_dicom(head)


def _looks_like_dicom(head: bytes) -> bool:
    if head[_DICM_OFFSET:] == _DICM:
        return True
    if len(head) < 8:
        return False
    for order in "<>":
        group, element = struct.unpack(order + "HH", head[:4])
        if group not in _FIRST_GROUPS or element > 0x0100:
            continue
        explicit = head[4:6] in _VRS
        implicit_length = struct.unpack(order + "I", head[4:8])[0]
        if explicit or implicit_length < 1024:
            return True
    return False


def files_below(folder: Path) -> list[Path]:
    """Every visible regular file at any depth below `folder`, sorted (folder links are not followed)."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / n for n in sorted(names) if not n.startswith(".") and (Path(root) / n).is_file()]
    return found


def dicom_files_below(folder: Path) -> list[Path]:
    """The DICOM files at any depth below `folder`, sorted by path, and those that cannot be opened (a slice could
    hide among them: read_dicom_header then names the file and the reason)."""
    return [p for p in files_below(folder) if is_dicom_file(p) or not os.access(p, os.R_OK)]


def holds_dicom(folder: Path) -> bool:
    """True when a DICOM file lies somewhere below `folder` (stops at the first)."""
    return any(is_dicom_file(p) for p in files_below(folder))


def read_dicom_header(path: Path) -> Slice | Other:
    """What the DICOM file `path` is; InputError naming it when it is truncated or its header cannot be read."""
    import pydicom

    try:
        size = path.stat().st_size
        open(path, "rb").close()
    except OSError as e:
        raise InputError(f"{shown(path)}: cannot be read ({e.strerror})") from e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about odd values; the checks below decide
        try:
            with open(path, "rb") as f:
                ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
                pixels_at = f.tell()
        except Exception as e:  # pydicom raises many kinds on a broken header; each is a broken file
            reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
            raise InputError(f"{shown(path)}: unreadable DICOM header ({reason})") from e
    meta = getattr(ds, "file_meta", None)
    sop_class = str(ds.get("SOPClassUID") or getattr(meta, "MediaStorageSOPClassUID", "") or "")
    if not sop_class:
        raise InputError(f"{shown(path)}: incomplete DICOM file (no SOP Class UID: truncated or damaged)")
    kind = pydicom.uid.UID(sop_class).name
    is_image = "Image Storage" in kind
    deflated = str(getattr(meta, "TransferSyntaxUID", "")) == pydicom.uid.DeflatedExplicitVRLittleEndian
    if deflated:  # the file's bytes are a zlib stream: the pixel data is checked on the inflated dataset
        pixels_at, size = _deflated_pixel_data(path)
    if is_image and ("Rows" not in ds or "Columns" not in ds or pixels_at >= size):
        raise InputError(f"{shown(path)}: truncated DICOM file (it ends before its pixel data)")
    if not is_image or "Rows" not in ds:
        return Other(path, kind)
    if not deflated:
        _check_pixel_data(path, ds, pixels_at, size)
    elif size - pixels_at < _pixel_bytes(ds):
        raise InputError(f"{shown(path)}: truncated DICOM file (its deflated pixel data holds {size - pixels_at:,} "
                         f"of the {_pixel_bytes(ds):,} bytes its rows and columns need)")
    return _slice_or_other(path, ds, kind)


def _deflated_pixel_data(path: Path) -> tuple[int, int]:
    """(0, length of the pixel data) of a deflated file read whole, or (1, 0) when it holds none: the same test
    as (offset of the pixel data, file size) for the other transfer syntaxes."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            full = pydicom.dcmread(path, force=True)
            return (0, len(full.PixelData)) if "PixelData" in full else (1, 0)
        except Exception as e:  # a cut zlib stream
            raise InputError(f"{shown(path)}: truncated DICOM file (its deflated data is cut short)") from e


def _pixel_bytes(ds) -> int:
    """The bytes of native pixel data its rows, columns, samples, bits and frames need."""
    return int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1) * \
        int(ds.get("BitsAllocated") or 16) // 8 * int(ds.get("NumberOfFrames") or 1)


def _slice_or_other(path: Path, ds, kind: str) -> Slice | Other:
    if int(ds.get("NumberOfFrames") or 1) > 1:
        return Other(path, f"multi-frame {kind}")
    position, orientation = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if not position or not orientation or len(position) != 3 or len(orientation) != 6:
        return Other(path, f"{kind} without a position or orientation")
    spacing = ds.get("PixelSpacing")
    return Slice(path, str(ds.get("SeriesInstanceUID") or ""), str(ds.get("SOPInstanceUID") or ""),
                 str(ds.get("Modality") or "unknown").strip(),
                 "LOCALIZER" in [str(v).upper() for v in (ds.get("ImageType") or [])],
                 (int(ds.Rows), int(ds.Columns)), tuple(float(v) for v in position),
                 tuple(float(v) for v in orientation),
                 tuple(float(v) for v in spacing) if spacing and len(spacing) == 2 else None)


def _check_pixel_data(path: Path, ds, at: int, size: int) -> None:
    """InputError when the pixel data element at byte `at` is cut short (the truncated slice a series would miss)."""
    with open(path, "rb") as f:
        f.seek(at)
        head = f.read(12)
    implicit, little_endian = getattr(ds, "original_encoding", (None, True))  # as pydicom read the dataset
    order = "<" if little_endian else ">"
    explicit = head[4:6] in _VRS if implicit is None else not implicit
    length = struct.unpack(order + "I", head[8:12] if explicit else head[4:8])[0] if len(head) >= 8 else 0
    start = at + (12 if explicit else 8)
    if length == _UNDEFINED_LENGTH:
        _check_encapsulated(path, size)
        return
    expected = _pixel_bytes(ds)
    held = min(length, size - start)
    if held < expected:
        raise InputError(f"{shown(path)}: truncated DICOM file (its pixel data holds {max(held, 0):,} of the "
                         f"{expected:,} bytes its rows and columns need)")


def _check_encapsulated(path: Path, size: int) -> None:
    """Compressed pixel data ends with a sequence delimiter; without it, read the file whole to be sure."""
    import pydicom

    with open(path, "rb") as f:
        f.seek(max(size - 8, 0))
        if f.read(8) == _SEQUENCE_END_LE:
            return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pydicom.dcmread(path, force=True)
        except Exception as e:  # noqa: BLE001 - a broken fragment is a truncated file too
            caught.append(warnings.WarningMessage(str(e), UserWarning, "", 0))
    if any("before delimiter" in str(w.message) or "nexpected end" in str(w.message) for w in caught):
        raise InputError(f"{shown(path)}: truncated DICOM file (its compressed pixel data is cut short)")
