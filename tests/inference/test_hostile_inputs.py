"""Hostile input, reading: memory bombs, silent wrong answers and valid oddities, each one InputError naming the
file."""
import gzip
import resource
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.grid.scan import Grid
from abdoseg.inference.io.errors import InputError
from abdoseg.inference.io.headers import MAX_VOXELS
from abdoseg.inference.io.read import read_array, read_header
from tests.helpers import ROOT, hostile


def _refused(path, *reasons):
    with pytest.raises(InputError) as e:
        read_array(read_header(path))
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for reason in reasons:
        assert reason in message, message
    return message


# --- memory bombs --------------------------------------------------------------------------------------------------
def _bombs(folder):
    """Files of at most a few kB whose headers claim many GB, or more than the payload can hold."""
    fat = (1024, 1024, 200)  # 2e8 voxels: under the cap, but 400 MB cannot come out of a few hundred bytes
    assert np.prod(fat) <= MAX_VOXELS
    return {
        hostile.nifti_bomb(folder / "isize_0000.nii.gz", folder): "more than the maximum",
        hostile.nifti_bomb(folder / "ratio_0000.nii.gz", folder, size=fat): "decompression bomb",
        hostile.metaimage(folder / "mha_0000.mha", size=hostile.BOMB_SIZE, payload=b"\0" * 64): "more than the maximum",
        hostile.metaimage(folder / "mharaw_0000.mha", size=fat, payload=b"\0" * 64): "truncated",
        hostile.metaimage(folder / "mhaz_0000.mha", size=fat, payload=zlib_block(), compressed=True):
            "decompression bomb",
        hostile.nrrd(folder / "nrrd_0000.nrrd", size=hostile.BOMB_SIZE, payload=b"\0" * 64): "more than the maximum",
        hostile.nrrd(folder / "nrrdraw_0000.nrrd", size=fat, payload=b"\0" * 64): "truncated",
        hostile.nrrd(folder / "nrrdgz_0000.nrrd", size=fat, encoding="gzip", payload=gzip.compress(b"\0" * 64)):
            "decompression bomb",
    }


def zlib_block() -> bytes:
    import zlib

    return zlib.compress(b"\0" * 4096)


def test_bombs_are_refused_from_the_header(tmp_path):
    for path, reason in _bombs(tmp_path).items():
        assert path.stat().st_size < 4096
        _refused(path, reason)


def test_bombs_never_allocate_their_claim(tmp_path):
    """Under a 1.5 GB address-space limit every bomb is still one clean InputError (no allocation of its claim)."""
    paths = list(_bombs(tmp_path))
    script = textwrap.dedent(f"""
        import sys
        from abdoseg.inference.io.errors import InputError
        from abdoseg.inference.io.read import read_array, read_header
        for p in {[str(p) for p in paths]!r}:
            try:
                read_array(read_header(p))
                print("ACCEPTED", p)
            except InputError as e:
                print("REFUSED", e)
    """)
    limit = 1536 * 2**20

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         preexec_fn=cap)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("REFUSED") == len(paths), res.stdout


def test_bombs_are_refused_before_the_runtime_compiles_for_their_shape(tmp_path, toy_card_path, monkeypatch):
    """OpenVINO compiles for a scan's shape while the voxels are read: a refused header must not get that far."""
    from abdoseg.inference.pipeline import Predictor

    predictor = Predictor.load(toy_card_path, runtime="onnxruntime")
    shapes = []
    monkeypatch.setattr(Predictor, "_prepare", lambda self, shape, *rest: shapes.append(shape))
    for path in _bombs(tmp_path):
        with pytest.raises(InputError):
            predictor.predict_file(path, tmp_path / "out.nii.gz")
    assert shapes == []
    sitk.WriteImage(hostile.small_scan(), str(tmp_path / "ok_0000.nii.gz"))
    predictor.predict_file(tmp_path / "ok_0000.nii.gz", tmp_path / "ok.nii.gz")
    assert len(shapes) == 1  # the spy sees a valid scan's compile request


def test_cap_is_documented():
    assert f"{MAX_VOXELS:,}" in (ROOT / "docs" / "usage.md").read_text()


# --- silent wrong answers --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0.0, float("nan"), float("inf"), -1.0])
def test_nifti_spacing_that_itk_would_replace_is_refused(tmp_path, bad):
    raw = hostile.nifti_bytes(hostile.small_scan(), tmp_path)
    path = tmp_path / "spacing_0000.nii.gz"
    path.write_bytes(gzip.compress(hostile.patched_nifti(raw, pixdim=(1.0, bad, 2.0))))
    _refused(path, "spacing")


@pytest.mark.parametrize("bad", ["0", "nan", "inf", "-1"])
def test_metaimage_spacing_is_checked(tmp_path, bad):
    _refused(hostile.metaimage(tmp_path / "s_0000.mha", spacing=f"1 {bad} 2"), "spacing")


def test_nrrd_zero_space_direction_is_refused(tmp_path):
    _refused(hostile.nrrd(tmp_path / "s_0000.nrrd", directions="(1,0,0) (0,0,0) (0,0,2)"), "spacing")


def test_zero_dimension_with_a_payload_is_refused(tmp_path):
    """ITK reads dim[3] = 0 as one slice and segments the payload as garbage."""
    raw = hostile.nifti_bytes(hostile.small_scan(), tmp_path)
    path = tmp_path / "zero_0000.nii"
    path.write_bytes(hostile.patched_nifti(raw, dims=(10, 12, 0)))
    assert sitk.ReadImage(str(path)).GetSize()[2] == 1  # what ITK alone would do
    _refused(path, "dimension")
    _refused(hostile.metaimage(tmp_path / "zero_0000.mha", size=(10, 0, 8)), "dimension")


def test_metaimage_string_elements_are_refused(tmp_path):
    _refused(hostile.metaimage(tmp_path / "str_0000.mha", element="MET_STRING"), "MET_STRING", "not a numeric")


def test_truncated_zlib_metaimage_is_refused(tmp_path):
    path = hostile.truncated_compressed_metaimage(tmp_path / "cut_0000.mha", tmp_path)
    # ITK alone raises nothing: the missing tail is whatever its buffer held (often, not always, other values)
    assert sitk.ReadImage(str(path)).GetSize() == hostile.truncated_metaimage_source().shape[::-1]
    _refused(path, "truncated")


def test_truncated_raw_payloads_are_refused(tmp_path):
    _refused(hostile.metaimage(tmp_path / "a_0000.mha", payload=b"\0" * 100), "truncated")
    _refused(hostile.nrrd(tmp_path / "b_0000.nrrd", payload=b"\0" * 100), "truncated")


def test_truncated_gzip_nrrd_is_refused(tmp_path):
    full = gzip.compress(np.random.default_rng(0).integers(0, 999, 960).astype(np.int16).tobytes())
    _refused(hostile.nrrd(tmp_path / "c_0000.nrrd", encoding="gzip", payload=full[: len(full) // 2]), "truncated")


def test_forged_gzip_trailer_does_not_hide_a_truncated_nifti(tmp_path):
    """ISIZE says complete, the deflate stream stops half-way: counted, refused."""
    image = sitk.GetImageFromArray(np.random.default_rng(1).integers(-1000, 1000, (16, 32, 32)).astype(np.int16))
    raw = hostile.nifti_bytes(image, tmp_path)
    packed = gzip.compress(raw)
    path = tmp_path / "forged_0000.nii.gz"
    path.write_bytes(packed[: len(packed) // 2] + packed[-8:])
    _refused(path, "truncated")


def test_sheared_direction_is_refused(tmp_path):
    """NIfTI would store it orthogonalised: the output would not be on the input's grid."""
    image = hostile.small_scan()
    image.SetDirection((1, 0.27, 0, 0, 1, 0, 0, 0, 1))
    path = tmp_path / "shear_0000.mha"
    sitk.WriteImage(image, str(path))
    _refused(path, "not orthonormal")


# --- valid oddities still read -------------------------------------------------------------------------------------
def test_multi_member_gzip_nifti_is_read(tmp_path):
    image = sitk.GetImageFromArray(np.random.default_rng(2).integers(-1000, 1000, (9, 20, 22)).astype(np.int16))
    image.SetSpacing((0.8, 0.8, 2.5))
    path = hostile.multi_member_nifti(tmp_path / "multi_0000.nii.gz", image, tmp_path)
    reader = read_header(path)
    np.testing.assert_array_equal(read_array(reader), sitk.GetArrayFromImage(image))
    assert Grid.of(reader) == Grid.of(sitk.ReadImage(str(path)))


def test_a_large_valid_compressed_scan_passes_the_ratio_check(tmp_path):
    """All air compresses ~1000:1 and is valid: the bound is deflate's own maximum, not a guess."""
    image = sitk.GetImageFromArray(np.full((64, 128, 128), -1024, np.int16))
    for suffix in (".nii.gz", ".mha", ".nrrd"):
        path = tmp_path / f"air_0000{suffix}"
        sitk.WriteImage(image, str(path), True)
        assert read_array(read_header(path)).shape == (64, 128, 128)


def test_headers_of_real_writers_pass(tmp_path):
    for suffix in (".nii", ".nii.gz", ".mha", ".nrrd"):
        for compress in (False, True):
            path = tmp_path / f"ok{compress:d}_0000{suffix}"
            sitk.WriteImage(hostile.small_scan(), str(path), compress)
            np.testing.assert_array_equal(read_array(read_header(path)),
                                          sitk.GetArrayFromImage(hostile.small_scan()))


def test_bomb_behind_an_overlong_header_is_still_capped(tmp_path):
    """A header too long for the raw parser goes to ITK, whose size is held to the same cap before any read."""
    path = hostile.metaimage(tmp_path / "long_0000.mha", size=hostile.BOMB_SIZE, payload=b"\0" * 64,
                             extra="\n".join(f"Comment{i} = {'x' * 1000}" for i in range(1100)))
    assert path.stat().st_size > 2**20
    _refused(path, "more than the maximum")


def test_ascii_metaimage_is_read(tmp_path):
    """Text voxels take fewer bytes than the binary type: no length check applies to them."""
    values = np.arange(-12, 12, dtype=np.float64).reshape(2, 3, 4)
    text = (" ".join(f"{v:g}" for v in values.ravel()) + "\n").encode()
    path = hostile.metaimage(tmp_path / "text_0000.mha", size=(4, 3, 2), element="MET_DOUBLE", payload=text,
                             binary=False)
    np.testing.assert_array_equal(read_array(read_header(path)), values)
