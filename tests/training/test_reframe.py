"""Re-framed copies used to check robustness: same anatomy, other storage or framing."""
import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.grid.orientation import Reorientation, orientation_of
from abdoseg.training.reframe import reframe
from tests.helpers import real_image


def _canonical(image):
    arr = sitk.GetArrayFromImage(image)
    return Reorientation.between(orientation_of(image.GetDirection()), "RAS").apply(arr)


@pytest.mark.parametrize("case", ["abdpelvis3mm", "upperabd1mm"])
def test_reoriented_copy_has_the_same_canonical_voxels(case):
    image = sitk.ReadImage(str(real_image(case)))
    other = reframe(image, "reoriented", is_label=False)
    assert orientation_of(other.GetDirection()) != orientation_of(image.GetDirection())
    np.testing.assert_array_equal(_canonical(other), _canonical(image))


def test_upper60_keeps_the_head_side_slices_in_place():
    image = sitk.ReadImage(str(real_image("upperabd1mm")))  # LPS: z index grows toward the head
    upper = reframe(image, "upper60", is_label=False)
    assert upper.GetSize() == (512, 512, 12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(upper), sitk.GetArrayFromImage(image)[8:])
    assert upper.GetOrigin() == pytest.approx(image.TransformIndexToPhysicalPoint((0, 0, 8)))


def test_finer_copy_covers_the_same_extent():
    image = sitk.ReadImage(str(real_image("abdpelvis3mm")))
    finer = reframe(image, "finer", is_label=False)
    assert finer.GetSpacing() == pytest.approx((1.5, 1.5, 1.5)) and finer.GetSize() == (244, 202, 224)
    corner = lambda im: np.array(im.TransformContinuousIndexToPhysicalPoint([-0.5] * 3))  # noqa: E731
    np.testing.assert_allclose(corner(finer), corner(image), atol=1e-6)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown variant 'sideways'"):
        reframe(sitk.Image(4, 4, 4, sitk.sitkInt16), "sideways", is_label=False)
