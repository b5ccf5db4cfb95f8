"""Reading scans with clear errors: headers checked before ITK allocates anything, voxels read fast and verified.

Guarantees (docs/usage.md, "Guarantees on bad and hostile input"): every refusal is an InputError whose one-line
message names the file and the reason; a header is checked against the payload that can back it before ITK
allocates anything (abdoseg.inference.io.headers); no name reaches SimpleITK that would make it abort the process.
"""
from __future__ import annotations

import atexit
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abdoseg.inference.io.errors import InputError, shown
from abdoseg.inference.io.headers import GZIP_MAGIC, MAX_VOXELS, HeaderError, check_claim, inflated_size, read_claim

#: The scan file extensions; a safe link keeps its scan's, so that ITK picks the same reader.
_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".nrrd")
_PRIVATE: list[Path] = []  # this process's private temporary folder (safe links, header probes)
_LINKS: dict[str, Path] = {}  # safe link -> the scan it points to


def private_dir() -> Path:
    """This process's private temporary folder (safe links to scans, NIfTI header probes), removed at exit."""
    if not _PRIVATE:
        folder = tempfile.mkdtemp(prefix="abdoseg-")
        atexit.register(shutil.rmtree, folder, True)
        _PRIVATE.append(Path(folder))
    return _PRIVATE[0]


def _itk_name(path: Path) -> str:
    """A file name SimpleITK can take for `path`: the path itself, or, when it holds bytes that are not UTF-8
    (SimpleITK aborts the whole process on them), a symbolic link with an ASCII name in a private folder."""
    text = str(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    ext = next((e for e in _EXTENSIONS if path.name.lower().endswith(e)), "")
    link = private_dir() / f"scan-{len(_LINKS)}-{os.getpid()}{ext}"
    os.symlink(os.path.abspath(path), link)
    _LINKS[str(link)] = path
    return str(link)


def _release(name: str) -> None:
    if _LINKS.pop(name, None) is not None:
        Path(name).unlink(missing_ok=True)


def source_of(reader: sitk.ImageFileReader) -> Path:
    """The scan a reader from read_header reads (its file name may be a safe link to it)."""
    name = reader.GetFileName()
    return _LINKS.get(name, Path(name))


def _check_file(path: Path) -> None:
    """InputError for what is not a non-empty readable regular file (broken link, link loop, folder, device)."""
    try:
        st = path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{shown(path)}: symbolic link loop") from e
        if e.errno == errno.ENOENT and os.path.islink(path):
            raise InputError(f"{shown(path)}: broken symbolic link (its target "
                             f"{shown(os.readlink(path))} does not exist)") from e
        raise InputError(f"{shown(path)}: {'no such file' if e.errno == errno.ENOENT else e.strerror}") from e
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{shown(path)}: a folder, not a scan")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{shown(path)}: not a regular file")
    if st.st_size == 0:
        raise InputError(f"{shown(path)}: empty file")
    try:
        open(path, "rb").close()
    except OSError as e:
        raise InputError(f"{shown(path)}: cannot be read ({e.strerror})") from e


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


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _check_complete(path: Path, reader: sitk.ImageFileReader) -> None:
    """ITK reads a truncated NIfTI without complaint (the missing voxels come back as garbage): check its length.

    .nii: the file size; .nii.gz: the gzip trailer's ISIZE (uncompressed length mod 2**32; exact below the voxel
    cap) — 4 bytes of I/O instead of a second decompression — and when it differs (a multi-member gzip, or a
    truncated file), a streamed count of every member. A .nii.gz that is not gzip at all (ITK reads it) counts as
    .nii. Other formats are checked against their headers by abdoseg.inference.io.headers.
    """
    expected = _expected_nifti_bytes(reader)
    name = path.name.lower()
    if expected is None or not name.endswith((".nii", ".nii.gz")):
        return
    if name.endswith(".nii.gz") and _is_gzip(path):
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            if int.from_bytes(f.read(4), "little") == expected and expected < 2**32:
                return
        actual = _inflated_or_error(path, expected)
    else:
        actual = path.stat().st_size
    if actual != expected:
        raise InputError(f"{shown(path)}: truncated or corrupt file (header promises {expected} bytes, found {actual})")


def _inflated_or_error(path: Path, expected: int) -> int:
    try:
        return inflated_size(path, limit=expected)
    except HeaderError as e:
        raise InputError(f"{shown(path)}: {e}") from e


def read_header(path: Path) -> sitk.ImageFileReader:
    """Open a scan and validate its header (3D, scalar, real, sane spacing and direction, size within the cap,
    a payload that can back it, complete file) without reading voxels; InputError otherwise."""
    path = Path(path)
    _check_file(path)
    claim = read_claim(path)
    if claim is not None:
        try:
            check_claim(claim)
        except HeaderError as e:
            raise InputError(f"{shown(path)}: {e}") from e
    name = _itk_name(path)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
        except RuntimeError as e:
            raise InputError(f"{shown(path)}: not a readable image ({itk_reason(e)})") from e
        _check_itk_header(path, reader)
        _check_complete(path, reader)
    except BaseException:
        _release(name)
        raise
    return reader


def _check_itk_header(path: Path, reader: sitk.ImageFileReader) -> None:
    keys = reader.GetMetaDataKeys()
    dims = int(reader.GetMetaData("dim[0]")) if "dim[0]" in keys else reader.GetDimension()
    if reader.GetDimension() != 3 or dims > 4 or (dims == 4 and reader.GetNumberOfComponents() > 1):
        n = max(reader.GetDimension(), min(dims, 4))
        raise InputError(f"{shown(path)}: {n}D image, expected a 3D CT scan")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(f"{shown(path)}: {reader.GetNumberOfComponents()}-component (vector) pixels, "
                         "expected scalar CT")
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    if "complex" in pixel or "vector" in pixel or "label" in pixel:
        raise InputError(f"{shown(path)}: {pixel} pixels, expected real CT intensities")
    if min(reader.GetSize()) < 1:
        raise InputError(f"{shown(path)}: empty image of size {reader.GetSize()}")
    if int(np.prod(reader.GetSize(), dtype=np.int64)) > MAX_VOXELS:  # also when headers.read_claim could not parse it
        raise InputError(f"{shown(path)}: {'x'.join(map(str, reader.GetSize()))} voxels, more than the maximum "
                         f"{MAX_VOXELS:,} (2^28) this product accepts")
    spacing = reader.GetSpacing()
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise InputError(f"{shown(path)}: invalid spacing {spacing}")
    d = np.asarray(reader.GetDirection(), dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(d)) or np.abs(d - _nearest_rotation(d)).max() > DIRECTION_TOLERANCE:
        raise InputError(f"{shown(path)}: direction matrix {tuple(np.round(d.ravel(), 4))} is not orthonormal "
                         "(sheared or scaled axes): a label map cannot be written on the same grid in NIfTI")


#: How far (per cosine) a direction may be from orthonormal, and a written grid from the scan's.
DIRECTION_TOLERANCE = 1e-5


def _nearest_rotation(d: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(d)
    return u @ vt


def read_voxels(reader: sitk.ImageFileReader) -> sitk.Image:
    """The image behind a validated header (see read_header)."""
    try:
        return reader.Execute()
    except RuntimeError as e:
        raise InputError(f"{shown(source_of(reader))}: not a readable image ({itk_reason(e)})") from e


def read_array(reader: sitk.ImageFileReader) -> np.ndarray:
    """The voxels behind a validated header as a (z, y, x) array in stored order: the values and dtype ITK reads.

    Single-file little-endian NIfTI-1 without intensity scaling (what CT converters write) is read verbatim:
    .nii.gz inflated with ISA-L (isal; about twice as fast as ITK's zlib) straight into a writable array, of
    which the voxels are a view (OpenVINO shares a writable input; a read-only one it copies first). Every other
    scan goes through SimpleITK (the array is then a copy of ITK's buffer); a .nii.gz that the fast path could
    not inflate whole is first counted member by member (ITK fills a short stream with zeros without complaint).
    The header's meaning (geometry, datatype, scaling) is always ITK's: only the byte copy is replaced.
    """
    try:
        array = _verbatim_nifti_voxels(reader)
        if array is not None:
            return array
        path = source_of(reader)
        expected = _expected_nifti_bytes(reader)
        if path.name.lower().endswith(".nii.gz") and expected is not None and _is_gzip(path):
            actual = _inflated_or_error(path, expected)
            if actual < expected:
                raise InputError(f"{shown(path)}: truncated compressed data (header promises {expected} bytes, "
                                 f"the stream holds {actual})")
        return sitk.GetArrayFromImage(read_voxels(reader))
    finally:
        _release(reader.GetFileName())


#: NIfTI-1 datatype codes whose voxels ITK reads as they are stored (no conversion).
_NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
NIFTI1_LITTLE_ENDIAN = (348).to_bytes(4, "little")  # sizeof_hdr, the first field of a NIfTI-1 header


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
    path = source_of(reader)
    name = path.name.lower()
    layout = _verbatim_layout(reader) if name.endswith((".nii", ".nii.gz")) else None
    if layout is None:
        return None
    dtype, offset = layout
    shape = tuple(reader.GetSize())[::-1]
    count = int(np.prod(shape))
    if name.endswith(".nii"):
        with open(path, "rb") as f:
            if f.read(4) != NIFTI1_LITTLE_ENDIAN:
                return None
        voxels = np.fromfile(path, dtype=dtype, count=count, offset=offset)
        return voxels.reshape(shape) if voxels.size == count else None
    end = offset + count * dtype.itemsize
    data = _inflate(path, end)
    if data is None or data[:4].tobytes() != NIFTI1_LITTLE_ENDIAN:
        return None  # e.g. a stream ISA-L refuses (read_array counts it and says why), big-endian, NIfTI-2
    return data[offset:end].view(dtype).reshape(shape)


#: Inflated bytes past the voxels that the fast path checks (CRC, end of stream) before it leaves a file to ITK.
_INFLATE_TAIL = 1 << 20


def _inflate(path: Path, size: int) -> np.ndarray | None:
    """The first `size` bytes that the gzip file at `path` inflates to, in a new writable uint8 array, ISA-L writing
    straight into it (no compressed copy in memory, no pieces copied; docs/decisions.md); consecutive members are read
    on, as zlib's gzread (ITK) does. The whole stream is inflated, so every member's CRC and length are checked. None
    when the stream holds fewer bytes, does not end, fails a check, or holds more than _INFLATE_TAIL bytes past `size`:
    read_array then says why, or ITK reads it."""
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    if not hasattr(isal_zlib, "_GzipReader"):  # igzip's reader, not public API: pinned in requirements.txt
        return None
    out = np.empty(size, np.uint8)
    view, done = memoryview(out), 0
    try:
        with open(path, "rb", buffering=0) as f:
            reader = isal_zlib._GzipReader(f, 1 << 18)  # igzip's C reader: readinto inflates into `out`
            while done < size:
                got = reader.readinto(view[done:])
                if not got:
                    return None
                done += got
            tail = 0
            while piece := reader.read(1 << 16):  # b"" once the last member's CRC and length are checked
                tail += len(piece)
                if tail > _INFLATE_TAIL:
                    return None
            return out
    except (isal_zlib.error, EOFError, OSError):  # a bad CRC/length (BadGzipFile is an OSError), a cut stream
        return None


def itk_reason(error: RuntimeError) -> str:
    """The informative line of an ITK exception, shortened (and free of the private link names)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    line = next((ln for ln in lines if ":" in ln and ("rror" in ln or "not" in ln)), lines[-1] if lines else "")
    line = line.split(": ", 1)[-1][:160] if "sitk::ERROR" not in line else line.split("sitk::ERROR: ", 1)[-1][:160]
    for link, source in _LINKS.items():
        line = line.replace(link, shown(source))
    return line
