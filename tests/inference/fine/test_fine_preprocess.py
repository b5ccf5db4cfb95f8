"""The fine stage's one preprocessing: fine grid size, anti-aliased resample (the project's AxisMap
convention), HU windows, and labels on the same grid."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the fine stage's torch path

from abdoseg.inference.card import Window  # noqa: E402
from abdoseg.inference.fine.preprocess import (  # noqa: E402
    apply_windows,
    fine_grid_shape,
    prepare_image,
    prepare_labels,
    resample_volume,
    resize_maps,
)


def test_fine_grid_keeps_the_crop_extent():
    assert fine_grid_shape((100, 300, 310), (2.0, 0.75, 0.7), (2.5, 1.5, 1.5)) == (80, 150, 145)
    assert fine_grid_shape((1, 2, 2), (1.0, 1.0, 1.0), (2.5, 1.5, 1.5)) == (1, 1, 1)
    with pytest.raises(ValueError, match="spacings"):
        fine_grid_shape((10, 10, 10), (1.0, -1.0, 1.0), (2.5, 1.5, 1.5))


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_resample_matches_the_separable_axismap_weights(chunk):
    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 1500, size=(13, 40, 37)).astype(np.int16)
    out_shape = (7, 17, 61)  # shrink z and y (anti-aliased), grow x
    wz, wy, wx = (m.weights() for m in resize_maps(vol.shape, out_shape))
    expected = np.einsum("az,by,cx,zyx->abc", wz, wy, wx, vol.astype(np.float64))
    got = resample_volume(vol, out_shape, "cpu", chunk_slices=chunk)
    assert got.dtype == torch.float32 and tuple(got.shape) == out_shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-2)


def test_resample_preserves_constants_and_accepts_flipped_views():
    vol = np.full((9, 20, 20), 40, np.int16)[:, ::-1, ::-1]  # negative strides, as canonical views are
    got = resample_volume(vol, (4, 8, 33), "cpu")
    torch.testing.assert_close(got, torch.full((4, 8, 33), 40.0))


def test_windows_clip_and_scale_to_unit_range():
    hu = torch.tensor([[[-1000.0, -150.0, 50.0, 60.0, 250.0, 3000.0]]])
    out = apply_windows(hu, (Window(50, 400), Window(60, 100)))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 0.0, 0.5, 0.525, 1.0, 1.0]))
    torch.testing.assert_close(out[1, 0, 0], torch.tensor([0.0, 0.0, 0.4, 0.5, 1.0, 1.0]))


def test_image_and_labels_share_the_fine_grid():
    rng = np.random.default_rng(2)
    ct = rng.normal(0, 100, size=(30, 64, 70)).astype(np.float32)
    labels = np.zeros(ct.shape, np.uint8)
    labels[10:20, 20:40, 30:50] = 3
    spacing, fine = (3.0, 0.8, 0.8), (2.5, 1.5, 1.5)
    image = prepare_image(ct, spacing, fine, (Window(50, 400), Window(60, 100)), "cpu")
    target = prepare_labels(labels, spacing, fine)
    assert tuple(image.shape) == (2, *target.shape) == (2, 36, 34, 37)
    assert set(np.unique(target)) == {0, 3}
    # the box keeps its physical extent: 10 slices * 3 mm = 30 mm = 12 fine slices at 2.5 mm
    assert np.count_nonzero(target.any(axis=(1, 2))) == 12
