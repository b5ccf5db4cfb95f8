"""Long variants of real scans: lengths, labels, physical positions, the organ-free part."""
import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.training.long_scans import extend_arrays, filler_slices, long_scan, organ_free_scan
from tests.helpers import real_image, real_label


def test_extend_arrays_appends_mirrored_filler_with_background_labels():
    hu = np.arange(10, dtype=np.int16)[:, None, None] * np.ones((1, 2, 2), np.int16)
    labels = np.zeros((10, 2, 2), np.uint8)
    labels[6:] = 1
    filler = filler_slices(labels, gap=1)
    assert filler == slice(0, 5)
    out_hu, out_lab = extend_arrays(hu, labels, below=7, above=3, filler=filler)
    assert out_hu.shape[0] == 20 and out_lab.shape[0] == 20
    np.testing.assert_array_equal(out_hu[7:17], hu)  # the scan itself, unchanged
    assert set(out_hu[:7, 0, 0]) <= set(range(5)) and set(out_hu[17:, 0, 0]) <= set(range(5))  # filler only
    assert out_hu[6, 0, 0] == 0 and out_hu[17, 0, 0] == 0  # the filler's first slice meets the scan on both sides
    assert not out_lab[:7].any() and not out_lab[17:].any()


def test_a_scan_without_organ_free_slices_cannot_be_extended():
    labels = np.ones((4, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="no organ-free slices"):
        extend_arrays(np.zeros((4, 2, 2), np.int16), labels, 3, 0, filler_slices(labels))


@pytest.mark.parametrize("below, above", [(300, 0), (0, 300), (150, 600)])
def test_long_scan_keeps_the_original_voxels_at_their_physical_positions(below, above):
    image, label = sitk.ReadImage(str(real_image("abdpelvis3mm"))), sitk.ReadImage(str(real_label("abdpelvis3mm")))
    img, lab = long_scan(image, label, below, above)
    assert img.GetSize()[2] == image.GetSize()[2] + round(below / 3) + round(above / 3)
    assert lab.GetSize() == img.GetSize() and lab.GetOrigin() == img.GetOrigin()
    back = sitk.Resample(img, image, sitk.Transform(), sitk.sitkNearestNeighbor, -2000)  # onto the original grid
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    counts = np.bincount(sitk.GetArrayViewFromImage(lab).ravel(), minlength=5)
    np.testing.assert_array_equal(counts[1:], np.bincount(sitk.GetArrayViewFromImage(label).ravel(), minlength=5)[1:])


def test_organ_free_scan_is_the_pelvis_alone():
    image, label = sitk.ReadImage(str(real_image("abdpelvis3mm"))), sitk.ReadImage(str(real_label("abdpelvis3mm")))
    img, lab = organ_free_scan(image, label)
    assert not sitk.GetArrayViewFromImage(lab).any() and 0 < img.GetSize()[2] < image.GetSize()[2]
