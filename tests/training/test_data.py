"""Training inputs come from the inference resample graph; labels follow on the same voxel centres."""
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.card import Geometry
from abdoseg.inference.grid.geometry import axis_maps
from abdoseg.training.data import (
    FULL,
    UPPER60,
    Crop,
    Resampler,
    body_mask,
    find_cases,
    load_samples,
    model_grid_sample,
    read_canonical,
    training_classes,
)
from tests.helpers import DATA

FLARE = DATA / "flare21"
SMALL = Geometry("resize", (32, 64, 64))


def test_find_cases_names_a_missing_label(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    shutil.copy(FLARE / "imagesTr" / "abdpelvis3mm_0000.nii.gz", tmp_path / "imagesTr")
    with pytest.raises(ValueError, match="abdpelvis3mm.nii.gz: label file missing"):
        find_cases(tmp_path)
    with pytest.raises(ValueError, match="no imagesTr"):
        find_cases(tmp_path / "labelsTr")


def test_canonical_read_is_ras():
    case = next(c for c in find_cases(FLARE) if c.name == "upperabd1mm")  # stored LPS
    hu, labels, spacing = read_canonical(case)
    stored = sitk.GetArrayFromImage(sitk.ReadImage(str(case.image)))
    np.testing.assert_array_equal(hu, stored[:, ::-1, ::-1])  # LPS -> RAS flips y and x
    assert spacing == pytest.approx((2.0, 0.9765625, 0.9765625)) and labels.shape == hu.shape


def test_classes_put_organs_over_body_over_air():
    hu = np.full((10, 20, 20), -1000.0, np.float32)
    hu[2:8, 5:15, 5:15] = 40.0
    hu[4:6, 9:11, 9:11] = -900.0  # gas inside the body: filled as body
    labels = np.zeros(hu.shape, np.uint8)
    labels[3:5, 6:8, 6:8] = 1
    classes = training_classes(hu, labels)
    assert classes[0, 0, 0] == 0 and classes[5, 10, 10] == 1 and classes[3, 6, 6] == 2
    assert body_mask(hu)[4, 9, 9]


def test_crop_fractions_and_errors():
    assert UPPER60.slices((100, 10, 10)) == (slice(40, 100), slice(0, 10), slice(0, 10))
    with pytest.raises(ValueError, match="fractions"):
        Crop("bad", z=(0.5, 0.2)).slices((10, 10, 10))


def test_sample_is_the_graph_resample_and_labels_share_its_voxel_centres():
    case = next(c for c in find_cases(FLARE) if c.name == "abdpelvis3mm")
    resampler = Resampler(SMALL)
    sample = model_grid_sample(case, FULL, resampler)
    hu, labels, spacing = read_canonical(case)
    np.testing.assert_array_equal(sample.hu, resampler(hu, spacing))
    assert sample.hu.shape == sample.classes.shape == SMALL.shape
    # each organ's low-res centroid sits where the full-res centroid maps to (same voxel-centre convention)
    maps = axis_maps(hu.shape, spacing, SMALL)
    for label in (1, 2, 3):
        full_c = np.argwhere(labels == label).mean(0)
        low_c = np.argwhere(sample.classes == label + 1).mean(0)
        mapped = [(c - (m.n_in - 1) / 2) / m.step + (m.n_out - 1) / 2 for c, m in zip(full_c, maps)]
        np.testing.assert_allclose(low_c, mapped, atol=0.6)


def test_left_right_flip_commutes_with_the_resample():
    """Why flips may be done at low resolution: the graph of a flipped scan is the flipped graph output."""
    case = find_cases(FLARE)[0]
    hu, _, spacing = read_canonical(case)
    for geometry in (SMALL, Geometry("spacing", (32, 64, 64), (8.0, 5.0, 5.0))):
        resampler = Resampler(geometry)
        np.testing.assert_allclose(resampler(np.ascontiguousarray(hu[:, :, ::-1]), spacing),
                                   resampler(hu, spacing)[:, :, ::-1], atol=1e-3, rtol=1e-5)  # float summation order


def test_cache_is_reused(tmp_path):
    cases = find_cases(FLARE)[:1]
    first = load_samples(cases, (FULL,), SMALL, tmp_path)
    files = sorted(tmp_path.glob("*.npz"))
    assert len(files) == 1
    again = load_samples(cases, (FULL,), SMALL, tmp_path)
    np.testing.assert_array_equal(first[0].classes, again[0].classes)
    assert sorted(tmp_path.glob("*.npz")) == files
