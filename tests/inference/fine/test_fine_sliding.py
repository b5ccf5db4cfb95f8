"""Sliding-window inference: window placement, Gaussian weights, and that the weighted blend reproduces a
translation-equivariant network applied to the whole volume."""
import itertools

import pytest

torch = pytest.importorskip("torch")  # the fine stage's torch path

from abdoseg.inference.fine.sliding import gaussian_importance, sliding_window_logits, window_starts  # noqa: E402


@pytest.mark.parametrize("size, patch", [(64, 64), (65, 64), (100, 32), (161, 160), (47, 16), (500, 128)])
@pytest.mark.parametrize("step", [0.5, 1.0, 0.33])
def test_windows_cover_the_axis_with_bounded_stride(size, patch, step):
    starts = window_starts(size, patch, step)
    assert starts[0] == 0 and starts[-1] == size - patch
    assert all(0 < b - a <= patch * step + 1 for a, b in zip(starts, starts[1:]))  # +1: rounding
    covered = torch.zeros(size, dtype=torch.bool)
    for s in starts:
        covered[s : s + patch] = True
    assert covered.all()


def test_window_starts_rejects_a_patch_larger_than_the_axis():
    with pytest.raises(ValueError, match="size >= patch"):
        window_starts(10, 16, 0.5)


def test_gaussian_peaks_at_the_centre_and_never_reaches_zero():
    g = gaussian_importance((16, 32, 48), "cpu")
    assert g.shape == (16, 32, 48) and g.dtype == torch.float32
    assert g[8, 16, 24] == 1.0 and g.max() == 1.0
    assert g.min() > 0
    assert g[0, 0, 0] < 1e-6  # the corners count for almost nothing (sigma = patch / 8)


@pytest.mark.parametrize("size", [(20, 40, 50), (9, 17, 30)])  # second: smaller than the patch on two axes
def test_blend_of_windows_equals_whole_volume_for_a_pointwise_network(size):
    torch.manual_seed(0)
    net = torch.nn.Conv3d(2, 4, 1)  # pointwise: identical logits in every overlapping window
    image = torch.rand(2, *size)
    with torch.no_grad():
        logits, count = sliding_window_logits(net, image, (16, 32, 32), n_classes=4, step=0.5)
        expected = net(image[None])[0]
    starts = [window_starts(max(s, p), p, 0.5) for s, p in zip(size, (16, 32, 32))]
    assert count == len(list(itertools.product(*starts)))
    assert logits.shape == (4, *size)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_overlaps_are_gaussian_weighted_not_averaged():
    """A network whose output depends on the window position: the blend must follow the Gaussian weights."""
    calls = []

    def net(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(calls))
        return torch.full((1, 1, *x.shape[2:]), float(len(calls) - 1))

    logits, count = sliding_window_logits(net, torch.zeros(1, 16, 16, 24), (16, 16, 16), n_classes=1, step=0.5)
    assert count == 2  # x windows at 0 and 8
    g = gaussian_importance((16, 16, 16), "cpu")
    x = 10  # inside both windows: window 0 at offset 10, window 1 at offset 2
    w0, w1 = g[8, 8, x], g[8, 8, x - 8]
    torch.testing.assert_close(logits[0, 8, 8, x], w1 / (w0 + w1))
