"""canonical_hu: the graph's int16 input, zero-copy when possible, safe conversion otherwise."""
import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.grid.scan import Grid, canonical_hu


def _hu(image, orientation, **kw):
    return canonical_hu(sitk.GetArrayViewFromImage(image), Grid.of(image), orientation, **kw)


def test_canonical_int16_is_passed_without_copy():
    image = sitk.DICOMOrient(sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 4, 5)), "RAS")
    voxels = sitk.GetArrayViewFromImage(image)
    ct, spacing, orient = canonical_hu(voxels, Grid.of(image), "RAS")
    assert orient.is_identity and np.shares_memory(ct, voxels)


def test_array_must_match_the_grid():
    image = sitk.Image(4, 5, 6, sitk.sitkInt16)
    with pytest.raises(ValueError, match="does not match the grid"):
        canonical_hu(np.zeros((6, 4, 5), np.int16), Grid.of(image), "RAS")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int32, np.uint8])
def test_other_types_are_rounded_clipped_and_cleaned(dtype):
    values = np.array([-1000.4, 0.6, 40000, np.nan, np.inf, -np.inf, 12.5, 3], np.float64)
    if not np.issubdtype(dtype, np.floating):
        values = np.array([0, 1, 200, 3, 4, 5, 6, 7])
        if dtype != np.uint8:
            values[2] = 40000
    arr = np.resize(values.astype(dtype), 2 * 3 * 40).reshape(2, 3, 40)
    ct, _, _ = _hu(sitk.GetImageFromArray(arr), "LPS", chunk=1)
    assert ct.dtype == np.int16 and ct.flags.c_contiguous
    expect = np.clip(np.rint(np.nan_to_num(arr.astype(np.float64), nan=-1024, posinf=32767, neginf=-1024)), -32768, 32767)
    np.testing.assert_array_equal(ct, expect.astype(np.int16))


def test_grid_round_trip_and_size_check():
    image = sitk.Image(4, 5, 6, sitk.sitkInt16)
    image.SetSpacing((0.5, 0.7, 3.0))
    image.SetOrigin((1.0, -2.0, 3.5))
    image.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    grid = Grid.of(image)
    out = sitk.Image(4, 5, 6, sitk.sitkUInt8)
    grid.apply_to(out)
    assert Grid.of(out) == grid
    with pytest.raises(ValueError, match="differs from the scan"):
        grid.apply_to(sitk.Image(4, 5, 7, sitk.sitkUInt8))
