"""Largest-component cleanup and the class -> label lookup."""
import numpy as np
import pytest

from inference.postprocess import classes_to_labels, keep_largest_components

KEEP = {1: 1, 2: 2, 3: 1, 4: 1}


def _blobs():
    v = np.zeros((20, 30, 30), np.uint8)
    v[2:8, 2:12, 2:12] = 1      # liver, large
    v[15:17, 25:27, 25:27] = 1  # liver, stray fragment
    v[2:6, 20:24, 2:6] = 2      # kidney A
    v[2:6, 20:24, 20:24] = 2    # kidney B (same size)
    v[10:11, 10:11, 10:11] = 2  # kidney fragment: third, smallest
    v[10:14, 2:5, 20:25] = 3    # spleen, single
    v[18, 0, 0] = 4             # pancreas: two fragments, keep the larger
    v[12:14, 14:18, 14:18] = 4
    v[8, 8, 8] = 5              # a label the rules do not mention: untouched
    v[0, 29, 29] = 5
    return v


def test_keeps_k_largest_per_label_and_leaves_others():
    v = _blobs()
    before = v.copy()
    out = keep_largest_components(v, KEEP)
    np.testing.assert_array_equal(v, before)  # input not modified
    assert out.dtype == v.dtype
    assert (out == 1).sum() == 6 * 10 * 10 and out[15, 25, 25] == 0
    assert (out == 2).sum() == 2 * 4 * 4 * 4 and out[10, 10, 10] == 0
    assert (out == 3).sum() == (v == 3).sum()
    assert (out == 4).sum() == 2 * 4 * 4 and out[18, 0, 0] == 0
    assert (out == 5).sum() == 2


def test_touching_labels_are_separate_components():
    v = np.zeros((4, 4, 8), np.uint8)
    v[:, :, :4] = 1
    v[:, :, 4:] = 3
    np.testing.assert_array_equal(keep_largest_components(v, KEEP), v)


def test_empty_volume():
    v = np.zeros((3, 3, 3), np.uint8)
    np.testing.assert_array_equal(keep_largest_components(v, KEEP), v)


def test_class_lookup_and_range_check():
    classes = np.array([[[0, 1, 2, 3, 4, 5]]], np.uint8)
    np.testing.assert_array_equal(classes_to_labels(classes, (0, 0, 1, 2, 3, 4)), [[[0, 0, 1, 2, 3, 4]]])
    with pytest.raises(ValueError, match="class index 5"):
        classes_to_labels(classes, (0, 0, 1, 2, 3))
