"""Writing label maps atomically and verified, on the scan's exact grid.

A label map is encoded through Python (SimpleITK's own NIfTI header, checked to hold the scan's grid; the voxels
deflated by ISA-L), written to a short temporary name in the output folder (write and fsync errors raised, the
size checked), then renamed into place, never onto an input.
"""
from __future__ import annotations

import errno
import os
import signal
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from abdoseg.inference.grid.scan import Grid
from abdoseg.inference.io.errors import OutputError, shown
from abdoseg.inference.io.read import DIRECTION_TOLERANCE, NIFTI1_LITTLE_ENDIAN, itk_reason, private_dir

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
    fd, name = tempfile.mkstemp(prefix="header-", suffix=".nii", dir=private_dir())
    os.close(fd)
    try:
        sitk.WriteImage(probe, name)
        written = Grid.of(sitk.ReadImage(name))
        raw = Path(name).read_bytes()
    except RuntimeError as e:
        raise OutputError(f"SimpleITK could not make the NIfTI header ({itk_reason(e)})") from e
    finally:
        os.unlink(name)
    if raw[:4] != NIFTI1_LITTLE_ENDIAN or len(raw) != _NIFTI_HEADER_BYTES + 8:
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
    made contiguous one z-plane at a time, never copied whole (no second full-size buffer)."""
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
