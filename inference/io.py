"""Reading scans with clear errors, finding cases, and writing label maps atomically."""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from inference.scan import Grid

#: `<case>_0000.<ext>`: the FLARE naming of the (single) CT channel.
CASE_PATTERN = re.compile(r"^(?P<case>.+)_0000\.(?P<ext>nii\.gz|nii|mha|nrrd)$")


class InputError(ValueError):
    """A scan that cannot be segmented; the message names the file and the reason in one line."""


@dataclass(frozen=True)
class Case:
    name: str
    path: Path

    def output_path(self, out_dir: Path) -> Path:
        return Path(out_dir) / f"{self.name}.nii.gz"


def find_cases(in_dir: Path) -> tuple[list[Case], list[Path]]:
    """Cases named `<case>_0000.{nii.gz,nii,mha,nrrd}` in `in_dir` (sorted), and the other files ignored."""
    cases, ignored = [], []
    for p in sorted(Path(in_dir).iterdir()):
        m = CASE_PATTERN.match(p.name)
        if m and p.is_file():
            cases.append(Case(m["case"], p))
        elif not p.name.startswith("."):
            ignored.append(p)
    return cases, ignored


def _expected_nifti_bytes(reader: sitk.ImageFileReader) -> int | None:
    """Header + voxel bytes of a single-file NIfTI, from its header; None when the header does not say."""
    if "vox_offset" not in reader.GetMetaDataKeys():
        return None
    probe = sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID()))
    n_voxels = int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents()
    return int(float(reader.GetMetaData("vox_offset"))) + n_voxels * probe.itemsize


def _check_complete(path: Path, reader: sitk.ImageFileReader) -> None:
    """ITK reads a truncated NIfTI without complaint (the missing voxels come back as garbage): check its length.

    .nii: the file size; .nii.gz: the gzip trailer's ISIZE (uncompressed length mod 2**32) — 4 bytes of I/O
    instead of a second decompression. Other formats (MetaImage, NRRD) report truncation themselves.
    """
    expected = _expected_nifti_bytes(reader)
    if expected is None:
        return
    name = path.name.lower()
    if name.endswith(".nii"):
        actual = path.stat().st_size
    elif name.endswith(".nii.gz"):
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            actual = int.from_bytes(f.read(4), "little")
        expected %= 2**32
    else:
        return
    if actual != expected:
        raise InputError(f"{path}: truncated or corrupt file (header promises {expected} bytes, found {actual})")


def read_scan(path: Path) -> sitk.Image:
    """Read a 3D scalar scan, or raise InputError naming the file and why it cannot be used."""
    return read_voxels(read_header(path))


def read_header(path: Path) -> sitk.ImageFileReader:
    """Open a scan and validate its header (3D, scalar, real, sane spacing, complete file) without reading voxels."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(f"{path}: not a readable image ({_itk_reason(e)})") from e
    dims = int(reader.GetMetaData("dim[0]")) if "dim[0]" in reader.GetMetaDataKeys() else reader.GetDimension()
    if reader.GetDimension() != 3 or dims > 4 or (dims == 4 and reader.GetNumberOfComponents() > 1):
        n = max(reader.GetDimension(), min(dims, 4))
        raise InputError(f"{path}: {n}D image, expected a 3D CT scan")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(f"{path}: {reader.GetNumberOfComponents()}-component (vector) pixels, expected scalar CT")
    if "complex" in sitk.GetPixelIDValueAsString(reader.GetPixelID()):
        raise InputError(f"{path}: complex pixels, expected real CT intensities")
    if min(reader.GetSize()) < 1:
        raise InputError(f"{path}: empty image of size {reader.GetSize()}")
    spacing = reader.GetSpacing()
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise InputError(f"{path}: invalid spacing {spacing}")
    _check_complete(path, reader)
    return reader


def read_voxels(reader: sitk.ImageFileReader) -> sitk.Image:
    """The image behind a validated header (see read_header)."""
    try:
        return reader.Execute()
    except RuntimeError as e:
        raise InputError(f"{reader.GetFileName()}: not a readable image ({_itk_reason(e)})") from e


def _itk_reason(error: RuntimeError) -> str:
    """The informative line of an ITK exception, shortened."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    line = next((ln for ln in lines if ":" in ln and ("rror" in ln or "not" in ln)), lines[-1] if lines else "")
    return line.split(": ", 1)[-1][:160] if "sitk::ERROR" not in line else line.split("sitk::ERROR: ", 1)[-1][:160]


def write_labels_atomic(labels: np.ndarray, grid: Grid, out_path: Path) -> None:
    """Write `labels` (z,y,x uint8, stored order) on `grid`; temp file in the same folder, then rename."""
    out_path = Path(out_path)
    image = sitk.GetImageFromArray(np.asarray(labels, dtype=np.uint8))
    grid.apply_to(image)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".nii.gz", dir=out_path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, True, 1)  # useCompression, fastest level: label maps compress well anyway
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
