"""Crop geometry of the fine stage: organ box + margin in mm, clipping, no-organ case, paste round trip."""
import numpy as np
import pytest

from abdoseg.inference.fine.crop import CropBox, margin_voxels, organ_box, paste


def test_margin_in_mm_uses_each_axis_spacing():
    assert margin_voxels((2.5, 0.8, 0.7), 20.0) == (8, 25, 29)  # 20/2.5 exactly 8; 25; 28.57 -> 29
    with pytest.raises(ValueError, match="spacing"):
        margin_voxels((0.0, 1.0, 1.0), 20.0)


def test_organ_box_is_bbox_plus_margin_clipped_to_the_volume():
    labels = np.zeros((50, 120, 140), np.uint8)
    labels[20:31, 50:61, 3:9] = 1  # near the x = 0 edge
    labels[25, 70, 100] = 4
    box = organ_box(labels, spacing=(5.0, 1.0, 2.0), margin_mm=20.0)  # margins 4, 20, 10 voxels
    assert box == CropBox(start=(16, 30, 0), stop=(35, 91, 111), full_shape=(50, 120, 140))
    assert box.shape == (19, 61, 111)


def test_organ_box_contains_every_organ_voxel_with_the_margin_in_mm():
    rng = np.random.default_rng(1)
    labels = np.zeros((40, 64, 64), np.uint8)
    idx = tuple(rng.integers(8, 30, size=(3, 25)))
    labels[idx] = rng.integers(1, 5, size=25)
    spacing = (3.0, 0.9, 0.9)
    box = organ_box(labels, spacing, 6.0)
    pts = np.argwhere(labels)
    for axis, s in enumerate(spacing):
        lo, hi = pts[:, axis].min(), pts[:, axis].max()
        assert (lo - box.start[axis]) * s >= 6.0 or box.start[axis] == 0
        assert (box.stop[axis] - 1 - hi) * s >= 6.0 or box.stop[axis] == labels.shape[axis]
        assert (lo - box.start[axis] - 1) * s < 6.0  # not wider than needed


def test_no_organ_gives_none_and_whole_box_covers_the_scan():
    labels = np.zeros((10, 20, 30), np.uint8)
    assert organ_box(labels, (1.0, 1.0, 1.0), 20.0) is None
    whole = CropBox.whole(labels.shape)
    assert whole.is_whole and whole.shape == labels.shape


def test_paste_is_the_inverse_of_crop():
    rng = np.random.default_rng(0)
    full = rng.integers(0, 5, size=(30, 40, 50)).astype(np.uint8)
    box = CropBox(start=(3, 0, 17), stop=(29, 40, 33), full_shape=(30, 40, 50))
    back = paste(full[box.slices], box)
    assert back.dtype == np.uint8 and back.shape == full.shape
    assert np.array_equal(back[box.slices], full[box.slices])
    outside = np.ones(full.shape, bool)
    outside[box.slices] = False
    assert not back[outside].any()


def test_bad_boxes_and_mismatched_paste_raise():
    with pytest.raises(ValueError, match="start < stop"):
        CropBox(start=(0, 5, 0), stop=(4, 5, 4), full_shape=(10, 10, 10))
    with pytest.raises(ValueError, match="does not match the box shape"):
        paste(np.zeros((2, 2, 2), np.uint8), CropBox.whole((3, 3, 3)))
