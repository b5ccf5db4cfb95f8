"""read_array: the voxels ITK would return, read verbatim (ISA-L inflate) where NIfTI allows, else by ITK."""
import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.grid.scan import Grid
from abdoseg.inference.io.read import _verbatim_nifti_voxels, read_array, read_header
from tests.helpers import CASES, real_image

DTYPES = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.float32, np.float64]


def _image(dtype, shape=(7, 6, 5), seed=0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        arr = rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    else:
        arr = rng.normal(0, 500, size=shape).astype(dtype)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((-10.0, 20.5, 3.25))
    image.SetDirection((0, 0, 1, -1, 0, 0, 0, -1, 0))  # an oblique axis order: geometry stays ITK's
    return image


def _assert_same_as_itk(path, fast_path: bool):
    reader = read_header(path)
    reference = sitk.ReadImage(str(path))
    assert (_verbatim_nifti_voxels(reader) is not None) is fast_path
    voxels = read_array(reader)
    expected = sitk.GetArrayFromImage(reference)
    assert voxels.dtype == expected.dtype and voxels.shape == expected.shape
    np.testing.assert_array_equal(voxels, expected)
    assert Grid.of(reader) == Grid.of(reference)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_is_read_verbatim_with_itk_values_and_grid(tmp_path, dtype, suffix):
    path = tmp_path / f"scan_0000{suffix}"
    sitk.WriteImage(_image(dtype), str(path))
    _assert_same_as_itk(path, fast_path=True)


def test_inflated_voxels_are_a_writable_view_of_the_inflated_buffer(tmp_path):
    """Writable, so that OpenVINO shares the array instead of copying it (its data dispatcher copies read-only ones)."""
    path = tmp_path / "scan_0000.nii.gz"
    sitk.WriteImage(_image(np.int16), str(path))
    voxels = read_array(read_header(path))
    assert not voxels.flags.owndata and voxels.flags.writeable
    assert voxels.base.nbytes == 352 + voxels.nbytes  # the header and the voxels, one inflated buffer


@pytest.mark.slow
@pytest.mark.parametrize("size", [100, 5_000_000])
def test_inflating_reads_across_members_and_checks_the_whole_stream(tmp_path, size):
    """As zlib's gzread (ITK): consecutive members are one stream; what lies past the voxels is inflated and checked."""
    from abdoseg.inference.io.read import _INFLATE_TAIL, _inflate

    raw = np.random.default_rng(0).integers(0, 4, size, dtype=np.uint8).tobytes()  # compresses ~4x: many reads
    path = tmp_path / "scan.nii.gz"

    def inflate(packed: bytes, n: int):
        path.write_bytes(packed)
        return _inflate(path, n)

    two_members = gzip.compress(raw[: size // 3]) + gzip.compress(raw[size // 3:])
    assert inflate(two_members, size).tobytes() == raw
    assert inflate(two_members, size - 7).tobytes() == raw[:-7]  # the rest is inflated and checked, then dropped
    assert inflate(two_members, size + 1) is None  # the stream holds fewer bytes than asked for
    assert inflate(two_members[: len(two_members) // 3], size // 4) is None  # truncated: no end
    corrupt = bytearray(gzip.compress(raw))
    corrupt[-8] ^= 0xFF  # the CRC in the trailer
    assert inflate(bytes(corrupt), size) is None
    assert inflate(gzip.compress(raw) + b"not gzip", size) is None  # trailing bytes that are no member
    long_tail = gzip.compress(raw + bytes(_INFLATE_TAIL + 1))
    assert inflate(long_tail, size) is None  # past the voxels, more than the fast path checks: ITK reads it
    assert inflate(gzip.compress(raw + bytes(_INFLATE_TAIL)), size).tobytes() == raw


def test_multi_member_nifti_is_read_verbatim_as_itk_reads_it(tmp_path):
    plain = tmp_path / "plain.nii"
    sitk.WriteImage(_image(np.int16, shape=(9, 8, 7)), str(plain))
    raw = plain.read_bytes()
    path = tmp_path / "scan_0000.nii.gz"
    path.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:]))  # the cut inside the voxels
    _assert_same_as_itk(path, fast_path=True)


@pytest.mark.parametrize("slope, inter", [(2.0, 0.0), (1.0, -1024.0)])
def test_scaled_nifti_goes_through_itk(tmp_path, slope, inter):
    plain = tmp_path / "plain.nii"
    sitk.WriteImage(_image(np.int16), str(plain))
    scaled = tmp_path / "scaled_0000.nii.gz"
    raw = bytearray(plain.read_bytes())
    struct.pack_into("<ff", raw, 112, slope, inter)  # scl_slope, scl_inter
    scaled.write_bytes(gzip.compress(bytes(raw)))
    _assert_same_as_itk(scaled, fast_path=False)
    plain_values = sitk.GetArrayFromImage(sitk.ReadImage(str(plain))).astype(np.float64)
    np.testing.assert_allclose(read_array(read_header(scaled)), plain_values * slope + inter)


def test_non_gzip_bytes_named_nii_gz_go_through_itk(tmp_path):
    """ITK's znzlib reads an uncompressed file named .nii.gz; so must we (by handing it to ITK)."""
    plain = tmp_path / "plain.nii"
    sitk.WriteImage(_image(np.int16), str(plain))
    misnamed = tmp_path / "misnamed_0000.nii.gz"
    misnamed.write_bytes(plain.read_bytes())
    _assert_same_as_itk(misnamed, fast_path=False)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_other_formats_go_through_itk(tmp_path, suffix):
    path = tmp_path / f"scan_0000{suffix}"
    sitk.WriteImage(_image(np.int16), str(path), True)
    _assert_same_as_itk(path, fast_path=False)


@pytest.mark.parametrize("case", CASES)
def test_real_scans_are_read_verbatim(case):
    _assert_same_as_itk(real_image(case), fast_path=True)


def test_corrupt_gzip_stream_is_an_input_error(tmp_path):
    """Bytes flipped inside the deflate stream (length and trailer intact): one InputError naming the file."""
    from abdoseg.inference.io.errors import InputError

    path = tmp_path / "bad_0000.nii.gz"
    sitk.WriteImage(_image(np.int16, shape=(20, 64, 64)), str(path))
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(b ^ 0x5A for b in raw[middle:middle + 64])
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="bad_0000.nii.gz"):
        read_array(read_header(path))


#: The NIfTI-1 header's fields in order (348 bytes), for byte-swapping one by hand.
_NIFTI1_FIELDS = "i10s18sihcc8h3fhhhh8ffffhccffffii80s24shh6f4f4f4f16s4s"


def test_big_endian_nifti_goes_through_itk(tmp_path):
    """A byte-swapped NIfTI-1 must not be read as little-endian: the fast path declines and ITK swaps it."""
    plain = tmp_path / "plain.nii"
    sitk.WriteImage(_image(np.int16), str(plain))
    raw = plain.read_bytes()
    assert struct.calcsize("<" + _NIFTI1_FIELDS) == 348
    header = struct.pack(">" + _NIFTI1_FIELDS, *struct.unpack_from("<" + _NIFTI1_FIELDS, raw))
    voxels = np.frombuffer(raw, "<i2", offset=352).astype(">i2").tobytes()
    swapped = tmp_path / "swapped_0000.nii.gz"
    swapped.write_bytes(gzip.compress(header + raw[348:352] + voxels))
    _assert_same_as_itk(swapped, fast_path=False)
    np.testing.assert_array_equal(read_array(read_header(swapped)), sitk.GetArrayFromImage(sitk.ReadImage(str(plain))))
