"""What a scan's header claims, read from its raw bytes and checked before ITK allocates or reads anything.

ITK hides or trusts several header values: it replaces a zero/NaN/inf NIfTI pixdim with 1 mm and a zero dimension
with 1, allocates a MetaImage/NRRD's claimed size before reading its payload, and reads MET_STRING as bytes. So the
raw header is parsed here (NIfTI-1/2, MetaImage, NRRD) and `check_claim` refuses, with one line each:
a dimension < 1 or above NIfTI-1's 32767 (the label map could not be written), more than MAX_VOXELS voxels, a
spacing that is not a finite positive number, a non-numeric element type, and a payload too short to hold the
claimed voxels (raw: its length; compressed: deflate's maximum ratio, then an exact streamed count).
A file whose header is not recognised here is left to ITK, which then says why it cannot read it.
"""
from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

#: The largest scan accepted, in voxels: 2**28 = 268,435,456 (e.g. 512 x 512 x 1024).
MAX_VOXELS = 2**28
#: NIfTI-1 (the label map's format) stores each dimension as int16.
MAX_DIMENSION = 32767
#: Deflate cannot expand its input more than ~1032:1; a compressed payload claiming more is a bomb.
MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 24
_HEADER_LIMIT = 1 << 20  # bytes of text header read at most (MetaImage, NRRD)


class HeaderError(ValueError):
    """A header claim that cannot be trusted; the message is the reason (the caller adds the file name)."""


@dataclass(frozen=True)
class Claim:
    """What a header says: size (x, y, z, ...), raw spacings, bytes per voxel, and where its voxels lie."""

    size: tuple[int, ...]
    spacing: tuple[float, ...] | None
    bytes_per_voxel: int | None
    data_path: Path | None  # None: the payload cannot be located (e.g. a MetaImage file list)
    offset: int
    encoding: str  # raw | gzip | zlib | other
    element_type: str | None = None
    stream_checked: bool = True  # False: the caller checks the compressed stream (NIfTI: trailer first)

    @property
    def voxels(self) -> int:
        return math.prod(self.size)


def read_claim(path: Path) -> Claim | None:
    """The raw header of `path` by its extension (.nii/.nii.gz, .mha, .nrrd); None when not recognised."""
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            return _nifti_claim(path)
        if name.endswith(".mha"):
            return _metaimage_claim(path)
        if name.endswith(".nrrd"):
            return _nrrd_claim(path)
    except (OSError, EOFError, zlib.error, struct.error, ValueError, UnicodeDecodeError):
        return None
    return None


def check_claim(claim: Claim) -> None:
    """Raise HeaderError for a claim the pipeline must not trust (see the module docstring)."""
    size = claim.size
    if len(size) >= 3 and any(n < 1 for n in size[:3]):
        raise HeaderError(f"header gives dimension {size[:3]}: an image must have at least one voxel per axis")
    if claim.voxels > MAX_VOXELS:
        shape = "x".join(str(n) for n in size)
        raise HeaderError(f"header claims {shape} = {claim.voxels:,} voxels, more than the maximum "
                          f"{MAX_VOXELS:,} (2^28) this product accepts")
    if any(n > MAX_DIMENSION for n in size[:3]):
        raise HeaderError(f"dimension {max(size[:3])} exceeds {MAX_DIMENSION}, the most a NIfTI-1 label map holds")
    if claim.spacing is not None and len(size) >= 3:
        spacing = claim.spacing[:3]
        if not all(math.isfinite(s) and s > 0 for s in spacing):
            raise HeaderError(f"invalid voxel spacing {spacing} in the header (must be finite and > 0)")
    if claim.element_type is not None and claim.bytes_per_voxel is None:
        raise HeaderError(f"element type {claim.element_type} is not a numeric CT voxel type")
    _check_payload(claim)


def _check_payload(claim: Claim) -> None:
    if claim.data_path is None or claim.bytes_per_voxel is None or claim.encoding == "other":
        return
    needed = claim.voxels * claim.bytes_per_voxel
    try:
        available = claim.data_path.stat().st_size - claim.offset
    except OSError as e:
        raise HeaderError(f"its data file {claim.data_path} cannot be read ({e.strerror})") from e
    if claim.encoding == "raw":
        if available < needed:
            raise HeaderError(f"truncated: header promises {needed:,} bytes of voxels, "
                              f"the file holds {max(available, 0):,}")
        return
    if needed > max(available, 0) * MAX_DEFLATE_RATIO + 4096:
        raise HeaderError(f"header claims {needed:,} bytes of voxels, more than the {max(available, 0):,}-byte "
                          f"compressed payload can hold (a decompression bomb or a truncated file)")
    if claim.stream_checked:
        count = inflated_size(claim.data_path, claim.offset, zlib_header=claim.encoding == "zlib", limit=needed)
        if count < needed:
            raise HeaderError(f"truncated or corrupt compressed data: header promises {needed:,} bytes, "
                              f"the stream holds {count:,}")


def inflated_size(path: Path, offset: int = 0, zlib_header: bool = False, limit: int | None = None) -> int:
    """Bytes a compressed payload inflates to, streamed in bounded chunks (gzip: every member, CRCs checked).

    Stops past `limit` (returns limit + 1) so a bomb is never inflated whole; a corrupt or truncated stream
    raises HeaderError.
    """
    total = 0
    cap = None if limit is None else limit + 1
    try:
        with open(path, "rb") as raw:
            raw.seek(offset)
            if zlib_header:
                d = zlib.decompressobj()
                while (block := raw.read(_CHUNK)) and (cap is None or total < cap):
                    total += len(d.decompress(block))
                    while d.unconsumed_tail and (cap is None or total < cap):
                        total += len(d.decompress(d.unconsumed_tail, _CHUNK))
                if not d.eof and (cap is None or total < cap):
                    raise HeaderError(f"truncated compressed data (the stream ends after {total:,} bytes)")
            else:
                with gzip.GzipFile(fileobj=raw) as f:
                    while (block := f.read(_CHUNK)) and (cap is None or total < cap):
                        total += len(block)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise HeaderError(f"truncated or corrupt compressed data ({e})") from e
    return total if cap is None else min(total, cap)


# --- NIfTI-1 / NIfTI-2 -------------------------------------------------------------------------------------------
_NIFTI_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8,
                1536: 16, 1792: 16, 2048: 32, 2304: 4}
GZIP_MAGIC = b"\x1f\x8b"


def _nifti_claim(path: Path) -> Claim | None:
    with open(path, "rb") as f:
        gz = f.read(2) == GZIP_MAGIC
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        head = f.read(540)
    for endian in "<>":
        n = struct.unpack_from(endian + "i", head)[0]
        if n == 348 and len(head) >= 348:
            dims = struct.unpack_from(endian + "8h", head, 40)
            pixdim = struct.unpack_from(endian + "8f", head, 76)
            datatype = struct.unpack_from(endian + "h", head, 70)[0]
            offset = int(struct.unpack_from(endian + "f", head, 108)[0])
            break
        if n == 540 and len(head) >= 540:
            datatype = struct.unpack_from(endian + "h", head, 12)[0]
            dims = struct.unpack_from(endian + "8q", head, 16)
            pixdim = struct.unpack_from(endian + "8d", head, 104)
            offset = struct.unpack_from(endian + "q", head, 168)[0]
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7:
        return None  # ITK says what is wrong
    size = tuple(int(d) for d in dims[1:ndim + 1])
    return Claim(size=size, spacing=tuple(pixdim[1:ndim + 1]), bytes_per_voxel=_NIFTI_BYTES.get(datatype),
                 data_path=path, offset=0 if gz else offset, encoding="gzip" if gz else "raw",
                 stream_checked=False)


# --- MetaImage ---------------------------------------------------------------------------------------------------
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def _text_header(path: Path, sep: str, last_key: str | None) -> tuple[dict[str, str], int]:
    """`key<sep>value` lines (keys lower-cased) up to the `last_key` line or a blank line; and the header length."""
    with open(path, "rb") as f:
        head = f.read(_HEADER_LIMIT)
    fields, pos = {}, 0
    while pos < len(head):
        end = head.find(b"\n", pos)
        if end < 0:
            break
        line = head[pos:end].decode("latin-1").rstrip("\r")
        pos = end + 1
        if not line.strip():
            return fields, pos
        key, found, value = line.partition(sep)
        if found and not line.startswith("#") and ":=" not in line:
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == last_key:
                return fields, pos
    raise ValueError("header does not end")


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in re.split(r"[\s,()]+", text.strip()) if v)


def _metaimage_claim(path: Path) -> Claim | None:
    fields, end = _text_header(path, "=", "elementdatafile")
    if "dimsize" not in fields or "elementdatafile" not in fields:
        return None
    size = tuple(int(v) for v in fields["dimsize"].split())
    spacing = fields.get("elementspacing") or fields.get("elementsize")
    element = fields.get("elementtype", "").upper()
    channels = int(fields.get("elementnumberofchannels", "1"))
    per_voxel = _MET_BYTES.get(element)
    data = fields["elementdatafile"]
    if data.upper() == "LOCAL":
        data_path, offset = path, end
    elif data.upper().startswith("LIST") or "%" in data or " " in data:
        data_path, offset = None, 0
    else:
        data_path, offset = path.parent / data, int(fields.get("headersize", "0") or 0)
        if offset < 0:  # -1: the data are at the file's end (ITK computes the offset)
            data_path = None
    compressed = fields.get("compresseddata", "false").lower() == "true"
    binary = fields.get("binarydata", "true").lower() == "true"
    return Claim(size=size, spacing=_floats(spacing) if spacing else None,
                 bytes_per_voxel=per_voxel * channels if per_voxel else None, data_path=data_path, offset=offset,
                 encoding=("zlib" if compressed else "raw") if binary else "other", element_type=element or None)


# --- NRRD --------------------------------------------------------------------------------------------------------
_NRRD_BYTES = {"int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4, "int64": 8, "uint64": 8,
               "float": 4, "double": 8}
_NRRD_ALIASES = {"signed char": "int8", "uchar": "uint8", "unsigned char": "uint8", "short": "int16",
                 "short int": "int16", "signed short": "int16", "signed short int": "int16", "ushort": "uint16",
                 "unsigned short": "uint16", "unsigned short int": "uint16", "int": "int32", "signed int": "int32",
                 "uint": "uint32", "unsigned int": "uint32", "longlong": "int64", "long long": "int64",
                 "long long int": "int64", "signed long long": "int64", "signed long long int": "int64",
                 "ulonglong": "uint64", "unsigned long long": "uint64", "unsigned long long int": "uint64",
                 "int8_t": "int8", "uint8_t": "uint8", "int16_t": "int16", "uint16_t": "uint16", "int32_t": "int32",
                 "uint32_t": "uint32", "int64_t": "int64", "uint64_t": "uint64"}


def _nrrd_claim(path: Path) -> Claim | None:
    with open(path, "rb") as f:
        if not f.read(4) == b"NRRD":
            return None
    fields, end = _text_header(path, ":", None)
    if "sizes" not in fields:
        return None
    size = tuple(int(v) for v in fields["sizes"].split())
    spacing = None
    if "space directions" in fields:
        vectors = re.findall(r"\(([^)]*)\)", fields["space directions"])
        spacing = tuple(math.sqrt(sum(c * c for c in _floats(v))) for v in vectors) or None
    elif "spacings" in fields:
        spacing = tuple(float(v) for v in fields["spacings"].split())
    kind = fields.get("type", "").lower()
    per_voxel = _NRRD_BYTES.get(_NRRD_ALIASES.get(kind, kind))
    encoding = fields.get("encoding", "raw").lower()
    encoding = {"raw": "raw", "gzip": "gzip", "gz": "gzip"}.get(encoding, "other")
    data_file = fields.get("data file") or fields.get("datafile")
    if data_file is None:
        data_path = path
    elif " " in data_file or "%" in data_file or data_file.upper().startswith("LIST"):
        data_path = None
    else:
        data_path, end = path.parent / data_file, 0
    if "line skip" in fields or "lineskip" in fields or "byte skip" in fields or "byteskip" in fields:
        data_path = None  # rare; the voxel cap still bounds what ITK allocates
    return Claim(size=size, spacing=spacing, bytes_per_voxel=per_voxel, data_path=data_path, offset=end,
                 encoding=encoding, element_type=kind or None)
