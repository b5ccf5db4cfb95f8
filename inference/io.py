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


GZIP_MAGIC = b"\x1f\x8b"


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
    """Header + voxel bytes of a single-file NIfTI, from its header; None when the header does not say.

    The stored bytes per voxel come from `bitpix`, not from ITK's pixel type: ITK reports a scaled
    (scl_slope/scl_inter) integer file as float.
    """
    keys = reader.GetMetaDataKeys()
    if "vox_offset" not in keys or "bitpix" not in keys:
        return None
    n_voxels = int(np.prod(reader.GetSize())) * reader.GetNumberOfComponents()
    return int(float(reader.GetMetaData("vox_offset"))) + n_voxels * int(reader.GetMetaData("bitpix")) // 8


def _check_complete(path: Path, reader: sitk.ImageFileReader) -> None:
    """ITK reads a truncated NIfTI without complaint (the missing voxels come back as garbage): check its length.

    .nii: the file size; .nii.gz: the gzip trailer's ISIZE (uncompressed length mod 2**32) — 4 bytes of I/O
    instead of a second decompression (a .nii.gz that is not gzip at all, which ITK also reads, counts as
    .nii). Other formats (MetaImage, NRRD) report truncation themselves.
    """
    expected = _expected_nifti_bytes(reader)
    name = path.name.lower()
    if expected is None or not name.endswith((".nii", ".nii.gz")):
        return
    with open(path, "rb") as f:
        if name.endswith(".nii.gz") and f.read(2) == GZIP_MAGIC:
            f.seek(-4, os.SEEK_END)
            actual = int.from_bytes(f.read(4), "little")
            expected %= 2**32
        else:
            actual = path.stat().st_size
    if actual != expected:
        raise InputError(f"{path}: truncated or corrupt file (header promises {expected} bytes, found {actual})")


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


def read_array(reader: sitk.ImageFileReader) -> np.ndarray:
    """The voxels behind a validated header as a (z, y, x) array in stored order: the values and dtype ITK reads.

    Single-file little-endian NIfTI-1 without intensity scaling (what CT converters write) is read verbatim:
    .nii.gz inflated with ISA-L (isal; about twice as fast as ITK's zlib), the array a read-only view of the
    inflated bytes. Every other scan goes through SimpleITK (the array is then a copy of ITK's buffer).
    The header's meaning (geometry, datatype, scaling) is always ITK's: only the byte copy is replaced.
    """
    array = _verbatim_nifti_voxels(reader)
    if array is not None:
        return array
    return sitk.GetArrayFromImage(read_voxels(reader))


#: NIfTI-1 datatype codes whose voxels ITK reads as they are stored (no conversion).
_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
_NIFTI1_LITTLE_ENDIAN = (348).to_bytes(4, "little")  # sizeof_hdr, the first field of a NIfTI-1 header


def _verbatim_layout(reader: sitk.ImageFileReader) -> tuple[np.dtype, int] | None:
    """(little-endian dtype, byte offset) of the voxels when ITK would return them unchanged, else None."""
    keys = set(reader.GetMetaDataKeys())
    if not {"nifti_type", "datatype", "vox_offset", "scl_slope", "scl_inter"} <= keys:
        return None
    meta = reader.GetMetaData
    code = _NIFTI_DTYPES.get(int(meta("datatype")))
    if meta("nifti_type") != "1" or code is None:  # 1: single file (.nii/.nii.gz)
        return None
    if float(meta("scl_slope")) not in (0.0, 1.0) or float(meta("scl_inter")) != 0.0:
        return None  # ITK rescales (and converts to float): let it
    dtype = np.dtype("<" + code)
    itk_dtype = sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID())).dtype
    return (dtype, int(float(meta("vox_offset")))) if itk_dtype == dtype else None


def _verbatim_nifti_voxels(reader: sitk.ImageFileReader) -> np.ndarray | None:
    """The fast path of read_array, or None when the scan is not eligible (ITK then reads it)."""
    path = Path(reader.GetFileName())
    name = path.name.lower()
    layout = _verbatim_layout(reader) if name.endswith((".nii", ".nii.gz")) else None
    if layout is None:
        return None
    dtype, offset = layout
    shape = tuple(reader.GetSize())[::-1]
    count = int(np.prod(shape))
    if name.endswith(".nii"):
        with open(path, "rb") as f:
            if f.read(4) != _NIFTI1_LITTLE_ENDIAN:
                return None
        voxels = np.fromfile(path, dtype=dtype, count=count, offset=offset)
        return voxels.reshape(shape) if voxels.size == count else None
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    end = offset + count * dtype.itemsize
    try:
        data = isal_zlib.decompress(path.read_bytes(), wbits=31, bufsize=end)
    except isal_zlib.error:
        return None  # ITK reads it, or says why it cannot
    if len(data) < end or data[:4] != _NIFTI1_LITTLE_ENDIAN:
        return None  # e.g. a multi-member gzip (only the first member is inflated here), big-endian, NIfTI-2
    return np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(shape)


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
