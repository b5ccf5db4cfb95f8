"""Numpy sliding windows: nnU-Net's window placement and Gaussian, and exact reassembly of window outputs."""
from __future__ import annotations

import numpy as np
import pytest

from abdoseg.inference.sliding import gaussian_importance, pad_to_patch, sliding_window_logits, window_starts


@pytest.mark.parametrize(
    ("size", "patch", "step", "expected"),
    [(100, 64, 0.5, [0, 18, 36]), (64, 64, 0.5, [0]), (65, 64, 0.5, [0, 1]), (192, 64, 0.5, [0, 32, 64, 96, 128])],
)
def test_window_starts_follow_nnunet_placement(size: int, patch: int, step: float, expected: list[int]) -> None:
    assert window_starts(size, patch, step) == expected


def test_window_starts_refuse_a_patch_larger_than_the_image() -> None:
    with pytest.raises(ValueError, match="size >= patch"):
        window_starts(10, 16, 0.5)


@pytest.mark.parametrize("patch", [(8, 24, 24), (5, 7), (64, 40)])
def test_gaussian_equals_scipy_filter_of_a_centred_delta(patch: tuple[int, ...]) -> None:
    """nnU-Net's compute_gaussian: gaussian_filter of a delta at n//2, σ = n/8, divided by its maximum."""
    ndimage = pytest.importorskip("scipy.ndimage")
    delta = np.zeros(patch)
    delta[tuple(n // 2 for n in patch)] = 1
    reference = ndimage.gaussian_filter(delta, [n / 8 for n in patch], 0, mode="constant", cval=0)
    reference /= reference.max()
    reference[reference == 0] = reference[reference > 0].min()
    np.testing.assert_allclose(gaussian_importance(patch), reference, rtol=1e-5, atol=1e-7)


def test_gaussian_has_no_zero_weight_where_scipy_truncates() -> None:
    weights = gaussian_importance((3, 80), sigma_scale=1 / 32)  # radius int(4·2.5+0.5) = 10 < 40: truncated
    assert weights.min() > 0 and weights.max() == pytest.approx(1.0)


def test_pad_to_patch_pads_symmetrically_and_crops_back() -> None:
    image = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    padded, crop = pad_to_patch(image, (6, 4), pad_value=-1)
    assert padded.shape == (2, 6, 5)
    assert (padded[:, :1] == -1).all() and (padded[:, 4:] == -1).all()
    np.testing.assert_array_equal(padded[(slice(None), *crop)], image)


@pytest.mark.parametrize(("shape", "patch", "batch"), [((1, 20, 30, 26), (8, 16, 16), 1), ((1, 40, 33), (16, 16), 3)])
def test_a_voxelwise_network_is_reassembled_exactly(shape: tuple[int, ...], patch: tuple[int, ...], batch: int) -> None:
    """Weights are normalised per voxel: a network that acts voxel by voxel gives its own output everywhere."""
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    logits, count = sliding_window_logits(lambda b: np.concatenate([b, -2 * b], axis=1), image, patch, 2, batch=batch)
    np.testing.assert_allclose(logits, np.concatenate([image, -2 * image]), rtol=1e-5, atol=1e-5)
    assert count == np.prod([len(window_starts(s, p, 0.5)) for s, p in zip(shape[1:], patch)])


def test_an_image_smaller_than_the_patch_is_padded_with_pad_value() -> None:
    seen = []

    def run(batch: np.ndarray) -> np.ndarray:
        seen.append(batch)
        return batch - batch.mean()

    image = np.ones((1, 4, 10, 10), dtype=np.float32)
    logits, count = sliding_window_logits(run, image, (8, 8, 8), 1, pad_value=0.0)
    assert count == 4 and logits.shape == (1, 4, 10, 10)
    assert seen[0].shape == (1, 1, 8, 8, 8) and seen[0][0, 0, 0].max() == 0.0  # first padded slab is zeros


def test_window_statistics_are_part_of_the_result() -> None:
    """A window-normalising network gives different logits than on the whole image: windows are not optional."""
    image = np.linspace(0, 1, 48, dtype=np.float32).reshape(1, 48)
    logits, _ = sliding_window_logits(lambda b: b - b.mean(axis=(1, 2), keepdims=True), image, (16,), 1)
    assert not np.allclose(logits, image - image.mean())


def test_a_runner_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="runner returned shape"):
        sliding_window_logits(lambda b: b[:, :, :4], np.zeros((1, 8, 8), np.float32), (8, 8), 1)
