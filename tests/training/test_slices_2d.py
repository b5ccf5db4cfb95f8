"""2D slice data, sampler and the seeds' recipes: real scans, foreground forcing, deep-supervision loss,
and a few real training steps per recipe at a tiny width."""
import dataclasses

import numpy as np
import pytest
import torch

from abdoseg.inference.card import Geometry, Window
from abdoseg.training.data import Resampler, find_cases, read_canonical
from abdoseg.training.slices.data import Intensity, SliceSampler, SliceVolume, load_slice_volumes
from abdoseg.training.slices.recipes import RECIPES, DeepSupervisionLoss, build_for, nnunet_ds_weights, train_steps
from tests.helpers import DATA

HW = (64, 64)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    return load_slice_volumes(find_cases(DATA / "flare21"), HW, tmp_path_factory.mktemp("slices"))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: more threads only contend on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def test_every_axial_slice_is_kept_and_resampled_in_plane_only(volumes, tmp_path):
    cases = find_cases(DATA / "flare21")
    for case, vol in zip(cases, volumes):
        hu, labels, _ = read_canonical(case)
        assert vol.hu.shape == vol.labels.shape == (hu.shape[0], *HW)
        assert vol.hu.dtype == np.float32 and set(np.unique(vol.labels)) <= set(range(5))
        assert set(np.unique(vol.labels)) - {0}  # organs survive the nearest-neighbour resample
    # a z step of 1 is the identity: slices of constant HU stay exactly those constants
    ct = np.broadcast_to(np.arange(-500, -500 + 7 * 50, 50, dtype=np.int16)[:, None, None], (7, 40, 30)).copy()
    out = Resampler(Geometry("resize", (7, *HW)))(ct, (3.0, 1.0, 1.0))
    np.testing.assert_allclose(out, np.broadcast_to(ct[:, :1, :1], (7, *HW)), atol=1e-3)
    # a second load reads the .npz cache written by the first and returns the same arrays
    load_slice_volumes(cases, HW, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == len(cases)
    again = load_slice_volumes(cases, HW, tmp_path)
    np.testing.assert_array_equal(again[0].hu, volumes[0].hu)


def test_a_third_of_every_batch_is_forced_to_hold_foreground(volumes):
    sampler = SliceSampler(volumes, batch_size=6, foreground_fraction=1 / 3, crop=(32, 32), seed=1)
    assert sampler.n_forced == 2
    unforced_empty = 0
    for _ in range(40):
        hu, labels = sampler.batch()
        assert hu.shape == labels.shape == (6, 32, 32) and labels.dtype == torch.int64
        assert all(labels[b].any() for b in (4, 5))
        unforced_empty += int(sum(not labels[b].any() for b in range(4)))
    assert unforced_empty > 0  # the others are plain random slices and crops (many hold no organ)


def test_sampler_rejects_what_it_cannot_honour(volumes):
    with pytest.raises(ValueError, match="larger than the slices"):
        SliceSampler(volumes, 2, crop=(65, 64))
    with pytest.raises(ValueError, match="foreground_fraction"):
        SliceSampler(volumes, 2, foreground_fraction=1.5)
    empty = SliceVolume("empty", np.zeros((3, 8, 8), np.float32), np.zeros((3, 8, 8), np.uint8))
    hu, labels = SliceSampler([empty], 3, foreground_fraction=1.0).batch()  # nothing to force: random slices
    assert hu.shape == (3, 8, 8) and not labels.any()


def test_intensity_windows_and_nnunet_ct_statistics(volumes):
    hu = torch.tensor([[[-1000.0, 40.0, 240.0]]])
    x = Intensity(windows=(Window(40.0, 400.0), Window(0.0, 2000.0)))(hu)
    torch.testing.assert_close(x, torch.tensor([[[[0.0, 0.5, 1.0]], [[0.0, 0.52, 0.62]]]]))
    ct = Intensity.ct_zscore(volumes)
    fg = np.concatenate([v.hu[v.labels > 0] for v in volumes])
    assert ct.clip == pytest.approx(tuple(np.percentile(fg, [0.5, 99.5])))
    z = ct(torch.from_numpy(fg[None, None]))
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05


def test_deep_supervision_loss_weights_each_output_against_a_resized_target():
    assert nnunet_ds_weights(4) == pytest.approx((4 / 7, 2 / 7, 1 / 7, 0.0))
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, :4] = 1
    perfect = [torch.where(_onehot_at(target, s) > 0, 10.0, -10.0) for s in (8, 4, 2)]
    wrong = [-p for p in perfect]
    ce = lambda logits, t: torch.nn.functional.cross_entropy(logits, t)  # noqa: E731
    loss = DeepSupervisionLoss(ce, (0.5, 0.3, 0.2))
    assert float(loss(perfect, target)) < 1e-6 < float(loss(wrong, target))
    only_coarse = DeepSupervisionLoss(ce, (0.0, 0.0, 1.0))
    assert float(only_coarse(perfect[:2] + wrong[2:], target)) > 1.0  # the 2×2 output is scored on a 2×2 target
    with pytest.raises(ValueError, match="3 network outputs but 2"):
        DeepSupervisionLoss(ce, (0.5, 0.5))(perfect, target)


def _onehot_at(target: torch.Tensor, size: int) -> torch.Tensor:
    t = torch.nn.functional.interpolate(target[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
    return torch.nn.functional.one_hot(t, 2).movedim(-1, 1)


def test_recipes_hold_the_papers_figures():
    nn2d, hr = RECIPES["nnunet2d"], RECIPES["hrnet48_ocr"]
    assert (nn2d.optimizer, nn2d.lr, nn2d.momentum, nn2d.poly_power, nn2d.loss) == ("sgd_nesterov", 0.01, 0.99, 0.9, "dice_ce")
    assert nn2d.foreground_fraction == pytest.approx(1 / 3) and nn2d.intensity == "ct_zscore"
    assert (hr.optimizer, hr.lr, hr.crop, hr.mixed_precision, hr.slice_size) == ("adam", 1e-3, (256, 256), True, (512, 512))
    assert nn2d.lr_at(0, 100) == 0.01 and nn2d.lr_at(50, 100) == pytest.approx(0.01 * 0.5**0.9)
    assert set(RECIPES) == {"vgg13_unet_ds", "nnunet2d", "hrnet48_ocr"}


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(RECIPES))
def test_a_tiny_width_trains_a_few_steps_and_the_loss_falls(arch, volumes, one_thread):
    recipe = RECIPES[arch]
    recipe = dataclasses.replace(recipe, slice_size=HW, crop=(32, 32) if recipe.crop else None, batch_size=4)
    torch.manual_seed(0)
    intensity = recipe.make_intensity(volumes)
    model = build_for(recipe, 1 / 16, intensity.n_channels)
    held_hu, held_target = SliceSampler(volumes, 8, 0.5, crop=recipe.crop, seed=99).batch()
    loss_fn = recipe.loss_fn()

    def held_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(model(intensity(held_hu)), held_target))

    before = held_loss()
    sampler = SliceSampler(volumes, recipe.batch_size, max(recipe.foreground_fraction, 1 / 3), crop=recipe.crop, seed=0)
    losses = train_steps(recipe, model, sampler, intensity, steps=12)
    assert all(np.isfinite(losses))
    assert held_loss() < before - 0.02, (before, held_loss(), losses)
