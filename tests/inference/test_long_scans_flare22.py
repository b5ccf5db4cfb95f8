"""Long scans with the FLARE22 card (`--card flare22`), tested as the FLARE21 card's (test_long_scans.py):
abdpelvis3mm padded with its own mirrored organ-free slices to chest-abdomen-pelvis, whole-body and 2,000 mm lengths,
organs at the top, bottom or middle, here with its FLARE22 labels (the filler starts below the IVC, 27 mm below
the kidneys). The locate stage must hold every FLARE22 organ slice, and no organ voxel of the un-padded run may lie
outside the slices it hands to the segmentation."""
import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.pipeline import Predictor, StageClock
from abdoseg.training.long_scans import long_scan
from tests.helpers import DATA, real_image

#: (mm below, mm above), as test_long_scans.py: organs at the top (636 mm), bottom, middle; whole body; 2,000 mm
TOP, BOTTOM, MIDDLE, WHOLE, LONGEST = (300, 0), (0, 300), (225, 225), (525, 525), (1664, 0)
EXTENSIONS = pytest.mark.parametrize("extension", [TOP, BOTTOM, MIDDLE, WHOLE, LONGEST],
                                     ids=["top", "bottom", "middle", "whole", "2000mm"])


@pytest.fixture(scope="module")
def scan():
    return sitk.ReadImage(str(real_image("abdpelvis3mm"))), sitk.ReadImage(str(DATA / "flare22" / "labelsTr" /
                                                                                 "abdpelvis3mm.nii.gz"))


@pytest.fixture(scope="module")
def flare22():
    return Predictor.load("flare22", runtime="openvino", threads=2)


@pytest.fixture(scope="module")
def unpadded(flare22, scan):
    """The un-padded scan's labels (336 mm: shorter than the canvas, never located)."""
    clock = StageClock()
    labels = flare22.segment_image(scan[0], clock)
    assert "locate" not in clock.details and labels.any()
    return labels


def test_the_flare22_card_has_a_locator():
    assert Predictor.load("flare22", runtime="onnxruntime").card.locator is not None


@pytest.mark.slow
@EXTENSIONS
def test_the_located_region_holds_every_organ_slice_and_every_organ_voxel_of_the_unpadded_run(
        flare22, scan, unpadded, extension):
    image, label = long_scan(*scan, *extension)
    clock = StageClock()
    labels = flare22.segment_image(image, clock)
    organs = np.flatnonzero(sitk.GetArrayViewFromImage(label).any(axis=(1, 2)))  # stored RAS: z is the slice axis
    lo, hi = clock.details["locate"]["organs"]["slices"]
    margin = flare22.card.locator.margin_mm / 3  # in 3 mm slices
    assert lo <= organs[0] and organs[-1] < hi, (lo, hi, organs[0], organs[-1])
    assert hi - lo <= organs[-1] - organs[0] + 1 + 2 * margin + 2 * 8 / 3  # the margin plus a coarse slice each side
    first = round(extension[0] / 3)  # where the un-padded scan's slices lie in the long one
    start, stop = clock.details["locate"]["window"]["slices"]
    organ_slices = np.flatnonzero(unpadded.any(axis=(1, 2))) + first
    assert start <= organ_slices[0] and organ_slices[-1] < stop, (start, stop, organ_slices[[0, -1]])
    same, organ = labels[first:first + len(unpadded)], unpadded > 0
    assert set(np.unique(same[organ])) - {0} == set(np.unique(unpadded[organ]))  # every organ still found
    assert np.mean(same[organ] == unpadded[organ]) >= 0.9  # the rest: the network's context (filler, not air)
