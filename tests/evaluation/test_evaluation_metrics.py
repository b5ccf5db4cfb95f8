"""DSC and NSD against DeepMind's surface-distance package (test dependency) and analytic cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import surface_distance as sd
from scipy import ndimage

from abdoseg.evaluation.metrics import dice, normalized_surface_dice, surface_distances, surfel_areas

AGREEMENT = 1e-6
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # surface-distance uses old scipy names


def reference_nsd(gt: np.ndarray, pred: np.ndarray, spacing, tolerance: float) -> float:
    return sd.compute_surface_dice_at_tolerance(sd.compute_surface_distances(gt, pred, spacing), tolerance)


def blob(rng: np.random.Generator, shape, sigma: float = 1.5, level: float = 0.5) -> np.ndarray:
    """Random smooth-ish shape (several components, holes) in a 3-D grid."""
    return ndimage.gaussian_filter(rng.random(shape), sigma) > level


def ball(shape, centre_mm, radius_mm: float, spacing) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm)) <= radius_mm**2


def test_surfel_area_table_matches_reference():
    for spacing in [(1.0, 1.0, 1.0), (2.5, 0.7, 0.7), (0.3, 1.9, 4.2)]:
        np.testing.assert_allclose(surfel_areas(spacing),
                                   sd.lookup_tables.create_table_neighbour_code_to_surface_area(spacing),
                                   rtol=0, atol=1e-12)


def test_random_shapes_on_anisotropic_grids_agree_with_surface_distance():
    rng = np.random.default_rng(20240521)
    compared = 0
    for _ in range(25):
        shape = tuple(int(n) for n in rng.integers(6, 28, size=3))
        spacing = tuple(float(s) for s in rng.uniform(0.4, 5.0, size=3))
        gt, pred = blob(rng, shape), blob(rng, shape, sigma=float(rng.uniform(0.8, 2.0)))
        if not (gt.any() and pred.any()):
            continue
        reference = sd.compute_surface_distances(gt, pred, spacing)
        for tolerance in (0.0, 0.5, 1.0, 2.0, 3.0, 7.0):
            ours = normalized_surface_dice(gt, pred, spacing, tolerance)
            expected = sd.compute_surface_dice_at_tolerance(reference, tolerance)
            assert abs(ours - expected) < AGREEMENT, (shape, spacing, tolerance)
            compared += 1
        assert abs(dice(gt, pred) - sd.compute_dice_coefficient(gt, pred)) < AGREEMENT
    assert compared >= 100


def test_surface_distances_match_reference_as_multisets():
    rng = np.random.default_rng(7)
    gt, pred = blob(rng, (14, 20, 17)), blob(rng, (14, 20, 17), sigma=1.2)
    spacing = (3.0, 0.8, 1.3)
    ours, ref = surface_distances(gt, pred, spacing), sd.compute_surface_distances(gt, pred, spacing)
    for d, a, key_d, key_a in [(ours.gt_distances, ours.gt_areas, "distances_gt_to_pred", "surfel_areas_gt"),
                               (ours.pred_distances, ours.pred_areas, "distances_pred_to_gt", "surfel_areas_pred")]:
        np.testing.assert_allclose(np.sort(d), ref[key_d], atol=AGREEMENT)
        assert abs(a.sum() - ref[key_a].sum()) < AGREEMENT * ref[key_a].sum()


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.8, 0.8), (0.6, 1.7, 3.1)])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_shifted_cube(spacing, axis):
    """Cube of 10 voxels shifted by k voxels: DSC = (10-k)/10; NSD = 1 while the shift is within tolerance."""
    gt = np.zeros((24, 24, 24), dtype=bool)
    gt[5:15, 6:16, 7:17] = True
    for k in (1, 3):
        pred = np.roll(gt, k, axis=axis)
        shift_mm = k * spacing[axis]
        assert dice(gt, pred) == pytest.approx((10 - k) / 10, abs=1e-12)
        for tolerance in (0.0, shift_mm, shift_mm + 0.5, max(shift_mm - 0.5, 0.1), 2.0):
            ours = normalized_surface_dice(gt, pred, spacing, tolerance)
            assert abs(ours - reference_nsd(gt, pred, spacing, tolerance)) < AGREEMENT
        assert normalized_surface_dice(gt, pred, spacing, shift_mm) == pytest.approx(1.0, abs=1e-12)
        assert normalized_surface_dice(gt, pred, spacing, 0.99 * shift_mm) < 1.0


def test_shifted_ball_on_anisotropic_grid():
    """Ball radius 12 mm shifted 2 mm along z: NSD 1 at ≥ 2 mm, below 1 under it, as the reference says.

    Surfels of a voxelised ball overestimate its area (staircase): ≈ 1.085 × 4πr² on isotropic grids.
    """
    spacing = (2.0, 0.9, 1.2)
    shape = (20, 40, 32)
    gt = ball(shape, (19.0, 18.0, 18.6), 12.0, spacing)
    pred = ball(shape, (21.0, 18.0, 18.6), 12.0, spacing)
    areas = surface_distances(gt, gt, spacing).gt_areas
    assert 1.0 < areas.sum() / (4 * math.pi * 12.0**2) < 1.15
    for tolerance in (0.5, 1.0, 1.5, 2.0, 3.0):
        assert abs(normalized_surface_dice(gt, pred, spacing, tolerance)
                   - reference_nsd(gt, pred, spacing, tolerance)) < AGREEMENT
    assert normalized_surface_dice(gt, pred, spacing, 2.0) == pytest.approx(1.0, abs=1e-12)
    assert normalized_surface_dice(gt, pred, spacing, 1.0) < 1.0


def test_areas_and_distances_scale_with_spacing():
    mask = ball((30, 30, 30), (14.5, 14.5, 14.5), 10.0, (1.0, 1.0, 1.0))
    other = np.roll(mask, 2, axis=2)
    unit, doubled = surface_distances(mask, other, (1.0, 1.0, 1.0)), surface_distances(mask, other, (2.0, 2.0, 2.0))
    np.testing.assert_allclose(doubled.gt_areas, 4 * unit.gt_areas, rtol=1e-12)
    np.testing.assert_allclose(doubled.gt_distances, 2 * unit.gt_distances, rtol=1e-12)
    assert unit.gt_areas.sum() / (4 * math.pi * 10.0**2) == pytest.approx(1.085, abs=0.01)


def test_concentric_balls_nsd_zero_below_gap_and_one_above():
    spacing = (1.0, 1.0, 1.0)
    small = ball((40, 40, 40), (20, 20, 20), 8.0, spacing)
    big = ball((40, 40, 40), (20, 20, 20), 14.0, spacing)
    assert normalized_surface_dice(small, big, spacing, 4.0) == 0.0
    assert normalized_surface_dice(small, big, spacing, 8.0) == 1.0
    assert dice(small, big) == pytest.approx(2 * 8**3 / (8**3 + 14**3), rel=0.05)


def test_empty_mask_rules(monkeypatch):
    empty = np.zeros((8, 8, 8), dtype=bool)
    full = empty.copy()
    full[2:5, 2:6, 3:7] = True
    spacing = (2.0, 1.0, 0.5)
    assert dice(empty, empty) == 1.0
    assert normalized_surface_dice(empty, empty, spacing, 1.0) == 1.0
    assert dice(full, empty) == dice(empty, full) == 0.0
    assert normalized_surface_dice(full, empty, spacing, 100.0) == 0.0
    assert normalized_surface_dice(empty, full, spacing, 100.0) == 0.0
    # The reference agrees where exactly one mask is empty (it needs np.Inf, gone in numpy 2).
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)
    assert reference_nsd(full, empty, spacing, 100.0) == 0.0
    assert reference_nsd(empty, full, spacing, 100.0) == 0.0
    d = surface_distances(full, empty, spacing)
    assert d.pred_areas.size == 0 and np.all(np.isinf(d.gt_distances)) and d.gt_distances.size > 0


def test_mask_touching_the_array_border_matches_reference():
    rng = np.random.default_rng(3)
    gt, pred = blob(rng, (9, 11, 10), sigma=1.0, level=0.45), blob(rng, (9, 11, 10), sigma=1.0, level=0.45)
    gt[0], pred[-1] = True, True
    for tolerance in (0.0, 1.0, 2.5):
        assert abs(normalized_surface_dice(gt, pred, (1.5, 1.0, 0.7), tolerance)
                   - reference_nsd(gt, pred, (1.5, 1.0, 0.7), tolerance)) < AGREEMENT


@pytest.mark.parametrize("bad", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, -2.0, 1.0), (1.0, math.nan, 1.0)])
def test_bad_spacing_is_named(bad):
    mask = np.ones((3, 3, 3), dtype=bool)
    with pytest.raises(ValueError, match="spacing must be 3 positive"):
        normalized_surface_dice(mask, mask, bad, 1.0)


def test_bad_tolerance_and_shapes_are_named():
    mask = np.ones((3, 3, 3), dtype=bool)
    with pytest.raises(ValueError, match="tolerance_mm must be >= 0, got -1"):
        normalized_surface_dice(mask, mask, (1, 1, 1), -1)
    with pytest.raises(ValueError, match=r"\(3, 3, 3\) and \(3, 3, 4\)"):
        normalized_surface_dice(mask, np.ones((3, 3, 4), dtype=bool), (1, 1, 1), 1.0)
