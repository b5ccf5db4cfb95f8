"""Reading scans with clear errors, finding cases, and writing label maps atomically and verified.

Guarantees (README, "Guarantees on bad and hostile input"): every refusal is an InputError whose one-line message
names the file (control characters and undecodable bytes escaped) and the reason; a header is checked against the
payload that can back it before ITK allocates anything (inference.headers); no name reaches SimpleITK that would
make it abort the process; a label map is written through Python (write errors and fsync errors are raised, the
size is checked) to a short temporary name in the output folder, then renamed, never onto an input.
"""
from __future__ import annotations

import atexit
import errno
import os
import re
import shutil
import signal
import stat
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from inference.headers import GZIP_MAGIC, MAX_VOXELS, HeaderError, check_claim, inflated_size, read_claim
from inference.scan import Grid

#: `<case>_0000.<ext>`: the FLARE naming of the (single) CT channel. Any character may be part of <case>.
CASE_PATTERN = re.compile(r"^(?P<case>.+)_0000\.(?P<ext>nii\.gz|nii|mha|nrrd)\Z", re.DOTALL)
_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".nrrd")


class InputError(ValueError):
    """A scan that cannot be segmented; the message names the file and the reason in one line."""


class OutputError(OSError):
    """A label map that could not be written completely; the message names the file and the reason."""


def shown(path: Path | str) -> str:
    """`path` as one printable line: control characters as \\n, \\t, \\x1b..., undecodable name bytes as \\xff."""
    out = []
    for ch in str(path):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape of a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or 0x7F <= code < 0xA0 or ch in "\u2028\u2029":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    problem: str | None = None  # why the case cannot run although it is named like one (e.g. two inputs)

    def output_path(self, out_dir: Path) -> Path:
        return Path(out_dir) / f"{self.name}.nii.gz"

    @property
    def label(self) -> str:
        """The case name as one printable line."""
        return shown(self.name)


def find_cases(in_dir: Path) -> tuple[list[Case], list[Path]]:
    """Cases named `<case>_0000.{nii.gz,nii,mha,nrrd}` in `in_dir` (sorted by name), and the other files ignored.

    Everything named like a scan is a case, also a dangling symbolic link or a link loop (it then fails with its
    reason); folders are ignored unless they hold a DICOM series (inference.dicom: the folder is the case). A case
    with inputs in several formats is one case with a `problem`.
    """
    from inference.dicom import is_series_folder, series_case_name

    found: dict[str, list[Path]] = {}
    ignored = []
    for p in sorted(Path(in_dir).iterdir()):
        m = CASE_PATTERN.match(p.name)
        if m and not p.is_dir():
            found.setdefault(m["case"], []).append(p)
        elif is_series_folder(p):  # a DICOM series folder is a case too (inference.dicom)
            found.setdefault(series_case_name(p), []).append(p)
        elif not p.name.startswith("."):
            ignored.append(p)
    cases = []
    for name, paths in sorted(found.items()):
        problem = None
        if len(paths) > 1:
            problem = (f"{shown(paths[0].parent)}: {len(paths)} inputs for case {shown(name)} "
                       f"({', '.join(shown(p.name) for p in paths)}): ambiguous, keep only one")
        cases.append(Case(name, paths[0], problem))
    return cases, ignored


def replaces_input(out_path: Path, in_dir: Path) -> bool:
    """True when `out_path` is an input of `in_dir` (output folder = input folder and the output's name is a
    scan's, e.g. case `a_0000` -> `a_0000.nii.gz`, the input of case `a`): it must never be written or removed."""
    out_path = Path(out_path)
    try:
        same_folder = os.path.samefile(out_path.parent, in_dir)
    except OSError:
        return False
    return same_folder and CASE_PATTERN.match(out_path.name) is not None and os.path.lexists(out_path)


def check_case(case: Case, out_path: Path, in_dir: Path) -> None:
    """InputError when the case cannot run whatever its scan holds (its `problem`, or an output onto an input)."""
    if case.problem:
        raise InputError(case.problem)
    if replaces_input(out_path, in_dir):
        raise InputError(f"{shown(case.path)}: its output {shown(Path(out_path).name)} would replace an input "
                         "scan of the same folder; write the outputs to another folder")


def remove_stale_output(out_path: Path, in_dir: Path) -> bool:
    """Remove an earlier run's `out_path` after this run failed the case (never an input); True if one was removed."""
    out_path = Path(out_path)
    if replaces_input(out_path, in_dir) or not os.path.lexists(out_path) or out_path.is_dir():
        return False
    out_path.unlink()
    return True


def failure_reason(error: BaseException, path: Path) -> str:
    """One line naming the file and the reason for any exception a case raised."""
    if isinstance(error, MemoryError):
        return f"{shown(path)}: not enough memory to segment this scan"
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.search(r"(^Exception from |^Check '.*' failed at |:\d+:?$)", ln)]
    reason = lines[0] if lines else type(error).__name__
    if isinstance(error, (InputError, OutputError)) and reason.startswith(shown(path)):
        return reason
    kind = "" if isinstance(error, (InputError, OSError, ValueError)) else f"{type(error).__name__}: "
    return f"{shown(path)}: {kind}{reason}"


# --- reading -----------------------------------------------------------------------------------------------------
_PRIVATE: list[Path] = []  # this process's private temporary folder (safe links, header probes)
_LINKS: dict[str, Path] = {}  # safe link -> the scan it points to


def _private_dir() -> Path:
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
    link = _private_dir() / f"scan-{len(_LINKS)}-{os.getpid()}{ext}"
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
    .nii. Other formats are checked against their headers by inference.headers.
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
            raise InputError(f"{shown(path)}: not a readable image ({_itk_reason(e)})") from e
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
    if int(np.prod(reader.GetSize(), dtype=np.int64)) > MAX_VOXELS:  # also when inference.headers could not parse it
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
        raise InputError(f"{shown(source_of(reader))}: not a readable image ({_itk_reason(e)})") from e


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
            if f.read(4) != _NIFTI1_LITTLE_ENDIAN:
                return None
        voxels = np.fromfile(path, dtype=dtype, count=count, offset=offset)
        return voxels.reshape(shape) if voxels.size == count else None
    end = offset + count * dtype.itemsize
    data = _inflate(path, end)
    if data is None or data[:4].tobytes() != _NIFTI1_LITTLE_ENDIAN:
        return None  # e.g. a stream ISA-L refuses (read_array counts it and says why), big-endian, NIfTI-2
    return data[offset:end].view(dtype).reshape(shape)


#: Inflated bytes past the voxels that the fast path checks (CRC, end of stream) before it leaves a file to ITK.
_INFLATE_TAIL = 1 << 20


def _inflate(path: Path, size: int) -> np.ndarray | None:
    """The first `size` bytes that the gzip file at `path` inflates to, in a new writable uint8 array, ISA-L writing
    straight into it (no compressed copy in memory, no pieces copied: 0.24 against 0.29 s and 17 k against 27 k
    fresh pages for 70 MB, 2-core EPYC); consecutive members are read on, as zlib's gzread (ITK) does. The whole
    stream is inflated, so every member's CRC and length are checked. None when the stream holds fewer bytes, does
    not end, fails a check, or holds more than _INFLATE_TAIL bytes past `size`: read_array then says why, or ITK
    reads it."""
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


def _itk_reason(error: RuntimeError) -> str:
    """The informative line of an ITK exception, shortened (and free of the private link names)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    line = next((ln for ln in lines if ":" in ln and ("rror" in ln or "not" in ln)), lines[-1] if lines else "")
    line = line.split(": ", 1)[-1][:160] if "sitk::ERROR" not in line else line.split("sitk::ERROR: ", 1)[-1][:160]
    for link, source in _LINKS.items():
        line = line.replace(link, shown(source))
    return line


# --- writing -----------------------------------------------------------------------------------------------------
_NIFTI_HEADER_BYTES = 352  # the NIfTI-1 header and its 4-byte extension flag; the voxels follow


def nifti_header(grid: Grid) -> bytes:
    """The NIfTI-1 header ITK writes for a uint8 label map on `grid` (ITK writes a 2x2x2 probe, the size is set
    after). OutputError when NIfTI would not keep the grid (ITK would silently orthogonalise a sheared direction)."""
    if any(not 1 <= n <= 32767 for n in grid.size):
        raise OutputError(f"size {grid.size} cannot be stored in a NIfTI-1 label map (1..32767 per axis)")
    probe = sitk.Image([2, 2, 2], sitk.sitkUInt8)
    probe.SetSpacing(grid.spacing)
    probe.SetOrigin(grid.origin)
    probe.SetDirection(grid.direction)
    fd, name = tempfile.mkstemp(prefix="header-", suffix=".nii", dir=_private_dir())
    os.close(fd)
    try:
        sitk.WriteImage(probe, name)
        written = Grid.of(sitk.ReadImage(name))
        raw = Path(name).read_bytes()
    except RuntimeError as e:
        raise OutputError(f"SimpleITK could not make the NIfTI header ({_itk_reason(e)})") from e
    finally:
        os.unlink(name)
    if raw[:4] != _NIFTI1_LITTLE_ENDIAN or len(raw) != _NIFTI_HEADER_BYTES + 8:
        raise OutputError("SimpleITK wrote an unexpected NIfTI header")
    for what, a, b in (("spacing", written.spacing, grid.spacing), ("origin", written.origin, grid.origin),
                       ("direction", written.direction, grid.direction)):
        if not np.allclose(a, b, rtol=DIRECTION_TOLERANCE, atol=DIRECTION_TOLERANCE):
            raise OutputError(f"NIfTI cannot store this scan's {what} {tuple(b)} (it would become {tuple(a)})")
    header = bytearray(raw[:_NIFTI_HEADER_BYTES])
    struct.pack_into("<3h", header, 42, *grid.size)  # dim[1..3]
    return bytes(header)


def encode_labels(labels: np.ndarray, grid: Grid) -> bytes:
    """A uint8 (z,y,x) label map on `grid` as the bytes of a .nii.gz (ITK's header, fast-level deflate).

    Deflated plane by plane: a flipped or transposed view (the canonical result seen in the scan's stored order) is
    made contiguous one z-plane at a time, never copied whole (35 MB of fresh pages on 512x512x134)."""
    labels = np.asarray(labels)
    if labels.shape != tuple(grid.size)[::-1]:
        raise ValueError(f"label map shape {labels.shape} differs from the scan's {tuple(grid.size)[::-1]} (z,y,x)")
    header = nifti_header(grid)
    try:
        from isal import isal_zlib as deflate
    except ImportError:  # pragma: no cover - isal is a runtime requirement
        import zlib as deflate
    packer = deflate.compressobj(1, deflate.DEFLATED, 31)  # gzip container, fastest level: labels compress well
    pieces = [packer.compress(header)]
    pieces += [packer.compress(np.ascontiguousarray(plane, dtype=np.uint8)) for plane in labels]
    return b"".join([*pieces, packer.flush()])


@contextmanager
def _signals_held():
    """SIGINT/SIGTERM wait until the block ends (so a temporary file is never created without its owner knowing)."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def write_labels_atomic(labels: np.ndarray, grid: Grid, out_path: Path) -> None:
    """Write `labels` (z,y,x uint8, stored order) on `grid` to `out_path`: a short temporary name in the same
    folder, every byte written and fsync'ed through Python (ENOSPC, EIO, EFBIG raise), its size checked, then
    renamed over `out_path`. OutputError naming the file on any failure; the temporary file never survives
    (also not an interrupt: SIGINT, or SIGTERM as the CLI delivers it)."""
    out_path = Path(out_path)
    payload = encode_labels(labels, grid)
    fd, tmp = None, None
    try:
        with _signals_held():
            fd, tmp = tempfile.mkstemp(prefix=".abdoseg-", suffix=".tmp", dir=out_path.parent)
        view, done = memoryview(payload), 0
        while done < len(view):
            done += os.write(fd, view[done:done + (1 << 22)])
        os.fsync(fd)
        if os.fstat(fd).st_size != len(payload):
            raise OSError(errno.EIO, f"{os.fstat(fd).st_size} of {len(payload)} bytes on disk")
        os.fchmod(fd, 0o644)
        os.close(fd)
        fd = None
        os.replace(tmp, out_path)
        tmp = None
        _fsync_folder(out_path.parent)
    except OSError as e:
        raise OutputError(f"{shown(out_path)}: the label map could not be written ({e.strerror or e})") from e
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (best effort: some file systems refuse to fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
