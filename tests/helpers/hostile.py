"""Builders of hostile scan files for the hostile-input tests (header tricks, bombs, odd encodings).

Each builder writes one file and returns its path; none of them needs more than a few kB of memory or disk.
"""
from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from tests.helpers.synthetic import synthetic_ct

#: More voxels than 2**32 bytes hold (16384 x 16384 x 8 int16 = 4 GiB): ISIZE mod 2**32 equals the header's size.
BOMB_SIZE = (16384, 16384, 8)


def small_scan(shape=(8, 12, 10), spacing=(2.0, 1.0, 1.0)) -> sitk.Image:
    return synthetic_ct(shape, spacing)


def nifti_bytes(image: sitk.Image, folder: Path) -> bytes:
    """The uncompressed single-file NIfTI-1 bytes ITK writes for `image`."""
    tmp = folder / "tmp_for_bytes.nii"
    sitk.WriteImage(image, str(tmp))
    raw = tmp.read_bytes()
    tmp.unlink()
    return raw


def patched_nifti(raw: bytes, dims=None, pixdim=None) -> bytes:
    """NIfTI-1 bytes with dim[1..3] and/or pixdim[1..3] overwritten (no other field touched)."""
    b = bytearray(raw)
    if dims is not None:
        struct.pack_into("<3h", b, 42, *dims)
    if pixdim is not None:
        struct.pack_into("<3f", b, 80, *pixdim)
    return bytes(b)


def nifti_bomb(path: Path, folder: Path, size=BOMB_SIZE) -> Path:
    """A .nii.gz of a few hundred bytes whose header claims `size` int16 voxels; only the header is compressed,
    so for 16384 x 16384 x 8 its gzip trailer (ISIZE = 352) equals the claimed length modulo 2**32."""
    raw = nifti_bytes(sitk.Image(2, 2, 2, sitk.sitkInt16), folder)
    header = bytearray(raw[:352])
    struct.pack_into("<3h", header, 42, *size)
    path.write_bytes(gzip.compress(bytes(header)))
    return path


def metaimage(path: Path, size=(10, 12, 8), element="MET_SHORT", spacing="1 1 2", payload: bytes | None = None,
              compressed: bool = False, extra: str = "", direction="1 0 0 0 1 0 0 0 1", binary: bool = True) -> Path:
    """A MetaImage .mha with a hand-written header (any claim) and the given payload (default: matching zeros)."""
    n = int(np.prod(size))
    if payload is None:
        payload = np.zeros(n, np.int16).tobytes()
        if compressed:
            payload = zlib.compress(payload)
    lines = ["ObjectType = Image", "NDims = 3", f"BinaryData = {binary}", "BinaryDataByteOrderMSB = False",
             f"CompressedData = {compressed}", f"TransformMatrix = {direction}", "Offset = 0 0 0",
             f"ElementSpacing = {spacing}", f"DimSize = {' '.join(str(s) for s in size)}", f"ElementType = {element}"]
    if compressed:
        lines.insert(5, f"CompressedDataSize = {len(payload)}")
    text = "\n".join(lines) + ("\n" + extra if extra else "") + "\nElementDataFile = LOCAL\n"
    path.write_bytes(text.encode() + payload)
    return path


def nrrd(path: Path, size=(10, 12, 8), encoding="raw", payload: bytes | None = None,
         directions="(1,0,0) (0,1,0) (0,0,2)") -> Path:
    """A NRRD file with a hand-written header and the given payload (default: matching zeros)."""
    if payload is None:
        payload = np.zeros(int(np.prod(size)), np.int16).tobytes()
        if encoding == "gzip":
            payload = gzip.compress(payload)
    header = (f"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
              f"sizes: {' '.join(str(s) for s in size)}\nspace directions: {directions}\n"
              f"kinds: domain domain domain\nendian: little\nencoding: {encoding}\nspace origin: (0,0,0)\n\n")
    path.write_bytes(header.encode() + payload)
    return path


def truncated_metaimage_source() -> np.ndarray:
    """The voxels `truncated_compressed_metaimage` compresses before cutting."""
    return np.random.default_rng(0).integers(0, 1000, (20, 30, 30)).astype(np.int16)


def truncated_compressed_metaimage(path: Path, folder: Path) -> Path:
    """A zlib-compressed .mha cut in half, its CompressedDataSize set to what is left.

    ITK reads it without an error; the voxels past the cut are whatever its buffer held (often zeros, not always).
    """
    image = sitk.GetImageFromArray(truncated_metaimage_source())
    full = folder / "tmp_full.mha"
    sitk.WriteImage(image, str(full), True)
    raw = full.read_bytes()
    full.unlink()
    start = raw.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    cut = raw[start:start + (len(raw) - start) // 2]
    head = re.sub(rb"CompressedDataSize = \d+", b"CompressedDataSize = %d" % len(cut), raw[:start])
    path.write_bytes(head + cut)
    return path


def multi_member_nifti(path: Path, image: sitk.Image, folder: Path) -> Path:
    """A valid .nii.gz made of three gzip members (gzip -c a b c > x.gz style): ITK reads it."""
    raw = nifti_bytes(image, folder)
    third = len(raw) // 3
    path.write_bytes(b"".join(gzip.compress(raw[i:j]) for i, j in ((0, third), (third, 2 * third), (2 * third, None))))
    return path
