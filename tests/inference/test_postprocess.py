"""Largest-component cleanup and the class -> label lookup."""
import numpy as np
import pytest

from abdoseg.inference.postprocess import classes_to_labels, keep_largest_components

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


def _two_pieces(gap: int, small: int):
    """A pancreas-like label in two pieces along x: 4x4x12 and 4x4x`small`, `gap` voxels apart."""
    v = np.zeros((6, 6, 40), np.uint8)
    v[1:5, 1:5, 0:12] = 4
    v[1:5, 1:5, 12 + gap:12 + gap + small] = 4
    return v


@pytest.mark.parametrize("gap, small, spacing, kept", [
    (10, 3, (1.0, 1.0, 1.0), False),   # small (3/12 < 0.4) and 10 mm away: dropped
    (10, 6, (1.0, 1.0, 1.0), True),    # 6/12 >= 0.4 of the largest: kept however far
    (4, 3, (1.0, 1.0, 1.0), True),     # small but 4 mm away (<= 5): kept
    (4, 3, (2.0, 2.0, 2.0), False),    # the same voxels on a 2 mm grid are 8 mm apart: dropped
])
def test_component_rule_keeps_a_second_piece_when_large_or_near(gap, small, spacing, kept):
    from abdoseg.inference.labels import ComponentRule

    rule = {4: ComponentRule(keep=1, extra=1, min_ratio=0.4, near_mm=5.0)}
    v = _two_pieces(gap, small)
    out = keep_largest_components(v, rule, spacing=spacing)
    assert (out == 4).sum() == (v == 4).sum() if kept else (out == 4).sum() == 4 * 4 * 12


def test_component_rule_extra_bounds_the_pieces_kept():
    from abdoseg.inference.labels import ComponentRule

    v = np.zeros((4, 4, 40), np.uint8)
    for start in (0, 10, 20, 30):  # four equal pieces: keep 1 + at most 2 more
        v[:, :, start:start + 5] = 4
    out = keep_largest_components(v, {4: ComponentRule(keep=1, extra=2, min_ratio=0.5)})
    assert (out == 4).sum() == 3 * 4 * 4 * 5


def test_component_rule_json_forms_and_validation():
    from abdoseg.inference.labels import ComponentRule

    assert ComponentRule.parse(2) == ComponentRule(2) and ComponentRule(2).to_json() == 2
    rule = ComponentRule(1, 1, 0.3, 10.0)
    assert ComponentRule.parse(rule.to_json()) == rule
    with pytest.raises(ValueError, match="component rule"):
        ComponentRule(keep=0)


def test_component_rule_drops_pieces_below_the_minimum_volume():
    from abdoseg.inference.labels import ComponentRule

    v = np.zeros((10, 10, 30), np.uint8)
    v[0:5, 0:5, 0:5] = 1      # 125 voxels = 1 ml at 2 mm (8 mm^3 a voxel)
    v[0:2, 0:2, 20:22] = 1    # 8 voxels = 0.064 ml
    rule = {1: ComponentRule(keep=2, min_ml=0.5)}
    out = keep_largest_components(v, rule, spacing=(2.0, 2.0, 2.0))
    assert (out == 1).sum() == 125  # the small piece goes although two pieces may stay
    assert not keep_largest_components(v, {1: ComponentRule(keep=1, min_ml=2.0)}, spacing=(2.0, 2.0, 2.0)).any()
    assert ComponentRule.parse(ComponentRule(1, min_ml=30.0).to_json()) == ComponentRule(1, min_ml=30.0)


@pytest.mark.parametrize("seed", range(3))
def test_component_statistics_equal_cc3d_statistics(seed):
    """Counts and boxes from the labelled voxels alone: as cc3d.statistics gives them (background count included)."""
    import cc3d

    from abdoseg.inference.postprocess import component_statistics

    rng = np.random.default_rng(seed)
    labels = np.zeros((23, 31, 29), np.uint8)
    for _ in range(12):  # blocks of several labels, some touching, some alone
        z, y, x = (rng.integers(0, d - 3) for d in labels.shape)
        labels[z:z + rng.integers(1, 6), y:y + rng.integers(1, 9), x:x + rng.integers(1, 9)] = rng.integers(1, 5)
    labels[rng.random(labels.shape) < 0.01] = 3  # specks: many one-voxel components
    components, n = cc3d.connected_components(labels, connectivity=26, return_N=True)
    sizes, boxes, label_of = component_statistics(labels, components, n)
    expected = cc3d.statistics(components)
    np.testing.assert_array_equal(sizes, expected["voxel_counts"])
    assert boxes[1:] == list(expected["bounding_boxes"][1:])
    for i in range(1, n + 1):
        assert np.all(labels[components == i] == label_of[i])
