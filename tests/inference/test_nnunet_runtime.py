"""The nnU-Net runtime (abdoseg.inference.nnunet) on toy cards: resampling as nnU-Net's, the band arg-max equal to the
full one, sliding windows in 2D, fold averaging and mirroring, the card, and the predictor end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from abdoseg.inference.card import CardError
from abdoseg.inference.nnunet.card import Resampling, is_nnunet_card, load_nnunet_card
from abdoseg.inference.nnunet.model import nonzero_box
from abdoseg.inference.nnunet.resample import (AxisTaps, compute_new_shape, labels_from_scores, resample_data,
                                               score_taps, separate_axis)
from abdoseg.inference.nnunet.windows import FoldEnsemble, logits_2d
from abdoseg.inference.sliding import sliding_window_logits
from tests.helpers.nnunet_toy import LABELS, write_toy_nnunet_card
from tests.helpers.synthetic import synthetic_ct

PROBABILITIES = Resampling("resample_data_or_seg_to_shape", {"is_seg": False, "order": 1, "order_z": 0,
                                                              "force_separate_z": None})


def _full_resize_argmax(scores: np.ndarray, out_shape, spacing_low, spacing_out) -> np.ndarray:
    """What nnU-Net does: every class's scores resized (skimage order 1, or in-plane + nearest z), then arg-max."""
    axis = separate_axis(spacing_low, spacing_out, None)
    resized = []
    for channel in scores:
        if axis is None:
            factors = [m / n for m, n in zip(out_shape, channel.shape)]
            resized.append(ndimage.zoom(channel, factors, order=1, mode="nearest", grid_mode=True))
            continue
        moved = np.moveaxis(channel, axis, 0)
        inplane = [m for a, m in enumerate(out_shape) if a != axis]
        slices = np.stack([ndimage.zoom(s, [m / n for m, n in zip(inplane, s.shape)], order=1, mode="nearest",
                                        grid_mode=True) for s in moved])
        coords = (np.arange(out_shape[axis]) + 0.5) * moved.shape[0] / out_shape[axis] - 0.5
        grid = np.meshgrid(coords, *[np.arange(n) for n in slices.shape[1:]], indexing="ij")
        resized.append(np.moveaxis(ndimage.map_coordinates(slices, grid, order=0, mode="nearest"), 0, axis))
    return np.argmax(np.stack(resized), axis=0)


@pytest.mark.parametrize("spacing_low,spacing_out,low,out", [
    ((2.0, 2.0, 2.0), (1.0, 0.8, 0.8), (9, 11, 12), (18, 27, 30)),  # isotropic: trilinear
    ((2.5, 2.0, 2.0), (2.5, 0.7, 0.7), (9, 11, 12), (9, 31, 34)),  # anisotropic scan: in-plane, z as is
    ((5.0, 1.0, 1.0), (2.5, 0.8, 0.8), (6, 20, 21), (12, 25, 26)),  # in-plane linear, z nearest
])
def test_band_argmax_equals_full_resize(spacing_low, spacing_out, low, out):
    rng = np.random.default_rng(3)
    smooth = ndimage.gaussian_filter(rng.normal(size=(4, *low)), (0, 1.5, 1.5, 1.5)).astype(np.float32) * 10
    taps = score_taps(low, out, spacing_low, spacing_out, PROBABILITIES)
    labels = labels_from_scores(smooth, out, taps)
    expected = _full_resize_argmax(smooth, out, spacing_low, spacing_out)
    assert labels.shape == tuple(out)
    assert len(np.unique(expected)) > 1
    assert (labels == expected).mean() > 0.9999  # float32 sums in another order may flip an exact tie
    noisy = rng.normal(size=(4, *low)).astype(np.float32)  # labels changing everywhere: the dense path
    np.testing.assert_array_equal(labels_from_scores(noisy, out, taps) == _full_resize_argmax(noisy, out, spacing_low,
                                                                                              spacing_out), True)


def test_separate_axis_follows_nnunet():
    assert separate_axis((2.5, 0.8, 0.8), (2.5, 2.0, 2.0), None) == 0  # the scan's coarse axis (ratio > 3)
    assert separate_axis((1.0, 0.8, 0.8), (2.5, 2.0, 2.0), None) is None
    assert separate_axis((1.0, 1.0, 1.0), (5.0, 1.0, 1.0), None) == 0  # the target's coarse axis
    assert separate_axis((0.24, 1.25, 1.25), (0.24, 1.25, 1.25), None) is None  # two coarse axes: not separate
    assert separate_axis((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), True) is None  # force with no single coarse axis
    assert compute_new_shape((134, 512, 512), (2.5, 0.8, 0.8), (2.5, 2.0, 2.0)) == (134, 205, 205)


def test_resample_data_is_skimage_resize():
    rng = np.random.default_rng(0)
    data = ndimage.gaussian_filter(rng.normal(size=(1, 10, 30, 28)), 2).astype(np.float32)
    rule = Resampling("resample_data_or_seg_to_shape", {"order": 3, "order_z": 0, "force_separate_z": None})
    iso = resample_data(data, (7, 12, 11), (1.0, 1.0, 1.0), (1.4, 2.5, 2.5), rule)
    zoom = np.clip(ndimage.zoom(data[0], [7 / 10, 12 / 30, 11 / 28], order=3, mode="nearest", grid_mode=True),
                   data.min(), data.max())  # skimage's resize clips to the input's range
    np.testing.assert_allclose(iso[0], zoom, atol=1e-5)
    aniso = resample_data(data, (5, 12, 11), (4.0, 1.0, 1.0), (8.0, 2.5, 2.5), rule)
    inplane = np.stack([np.clip(ndimage.zoom(s, [12 / 30, 11 / 28], order=3, mode="nearest", grid_mode=True),
                                s.min(), s.max()) for s in data[0]])
    np.testing.assert_allclose(aniso[0], inplane[AxisTaps.of(10, 5, 0).low], atol=1e-5)


def test_nonzero_box():
    data = np.zeros((1, 5, 6, 7), np.float32)
    data[0, 1:3, 2, 3:6] = -1
    assert nonzero_box(data) == (slice(1, 3), slice(2, 3), slice(3, 6))
    assert nonzero_box(np.zeros((1, 2, 3, 4))) == (slice(0, 2), slice(0, 3), slice(0, 4))


class _Fake:
    """A session: logits = a fixed non-symmetric map of the input (cumulative sums), scaled per fold."""

    def __init__(self, scale: float, n_classes: int = 2) -> None:
        self.scale, self.n_classes = scale, n_classes

    def run(self, feeds):
        x = feeds["image"]
        y = np.cumsum(np.cumsum(x, axis=-1), axis=2) * self.scale
        return np.concatenate([y + k for k in range(self.n_classes)], axis=1)


def test_fold_average_and_mirroring():
    x = np.random.default_rng(1).normal(size=(1, 1, 4, 5, 6)).astype(np.float32)
    plain = FoldEnsemble([_Fake(1.0), _Fake(3.0)])
    np.testing.assert_allclose(plain(x), _Fake(2.0).run({"image": x}), rtol=1e-5)
    mirrored = FoldEnsemble([_Fake(1.0)], mirror_axes=(0, 2))
    f = _Fake(1.0).run
    expected = (f({"image": x}) + np.flip(f({"image": np.flip(x, 2)}), 2) + np.flip(f({"image": np.flip(x, 4)}), 4)
                + np.flip(f({"image": np.flip(x, (2, 4))}), (2, 4))) / 4
    np.testing.assert_allclose(mirrored(x), expected, rtol=1e-5)
    assert mirrored.runs == 4


def test_2d_windows_are_slice_by_slice_windows():
    image = np.random.default_rng(2).normal(size=(1, 5, 21, 40)).astype(np.float32)
    fake = _Fake(0.1, n_classes=3)

    def run2d(batch):  # [B, C, y, x]
        return fake.run({"image": batch[:, :, None]})[:, :, 0]

    logits, n = logits_2d(run2d, image, (16, 16), 3, 0.5, 0.125, batch=2)
    for z in range(5):
        expected, per_slice = sliding_window_logits(run2d, image[:, z], (16, 16), 3)
        np.testing.assert_allclose(logits[:, z], expected, rtol=1e-4, atol=1e-4)
    assert n == 5 * per_slice


def test_card_loads_and_refuses(tmp_path):
    path = write_toy_nnunet_card(tmp_path)
    card = load_nnunet_card(path)
    assert is_nnunet_card(path) and card.label_map.organs == {k: v for k, v in LABELS.items() if k}
    assert card.onnx_path(1).is_file()
    bad = json.loads(path.read_text())
    bad["normalization"][0]["scheme"] = "ZScoreNormalization"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(CardError, match=r"bad\.json: only CTNormalization"):
        load_nnunet_card(tmp_path / "bad.json")
    bad = json.loads(path.read_text())
    bad["folds"] = [0, 1, 2]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(CardError, match="every fold"):
        load_nnunet_card(tmp_path / "bad.json")


@pytest.mark.parametrize("configuration", ["3d_fullres", "2d"])
def test_predictor_runtimes_agree_on_the_input_grid(tmp_path, configuration):
    from abdoseg.inference.pipeline import Predictor

    card = write_toy_nnunet_card(tmp_path, configuration, transpose_forward=(0, 2, 1))
    image = synthetic_ct((14, 40, 44), (2.5, 1.2, 1.1))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(tmp_path / "case_0000.nii.gz"))
    image = sitk.ReadImage(str(tmp_path / "case_0000.nii.gz"))  # the grid as NIfTI stores it
    labels = {}
    for runtime in ("openvino", "onnxruntime"):
        predictor = Predictor.load(card, runtime=runtime, threads=1)
        out = tmp_path / f"{runtime}.nii.gz"
        predictor.predict_file(tmp_path / "case_0000.nii.gz", out)
        written = sitk.ReadImage(str(out))
        for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            assert getattr(written, get)() == getattr(image, get)()
        labels[runtime] = sitk.GetArrayFromImage(written)
    assert (labels["openvino"] == labels["onnxruntime"]).mean() > 0.999
    assert len(np.unique(labels["openvino"])) >= 2  # a random toy network: some boundary to agree on


def test_tta_runs_every_mirroring(tmp_path):
    from abdoseg.inference.nnunet.model import Timings
    from abdoseg.inference.pipeline import Predictor

    card = write_toy_nnunet_card(tmp_path, folds=(0,))
    image = synthetic_ct((14, 40, 44), (2.5, 1.2, 1.1))
    figures = {}
    for tta in (False, True):
        clock = Timings()
        Predictor.load(card, runtime="onnxruntime", tta=tta).segment_image(image, clock)
        figures[tta] = clock.details["nnunet"]
    assert figures[True]["windows"] == figures[False]["windows"]
    assert figures[True]["network_runs"] == 8 * figures[False]["network_runs"]
    with pytest.raises(CardError, match="no mirroring"):
        Predictor.load("flare21", tta=True)


def test_predict_command_runs_an_nnunet_card(tmp_path, capsys):
    from abdoseg.inference.cli import main

    card = write_toy_nnunet_card(tmp_path / "model")
    (tmp_path / "in").mkdir()
    sitk.WriteImage(synthetic_ct((14, 40, 44), (2.5, 1.2, 1.1)), str(tmp_path / "in" / "a_0000.nii.gz"))
    (tmp_path / "in" / "0_0000.nii.gz").write_bytes(b"not a scan")  # the first case fails
    code = main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--card", str(card), "--tta",
                 "--statistics", "--runtime", "onnxruntime", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "0: FAILED" in err and "mirroring over axes [0, 1, 2]" in err
    stats = json.loads((tmp_path / "out" / "a.json").read_text())
    assert set(stats["organs"]) == {"liver", "kidney_left"}
    assert not (tmp_path / "out" / "0.nii.gz").exists()


def test_cascade_feeds_the_coarse_labels_one_hot(tmp_path):
    from abdoseg.inference.nnunet.model import NnunetModel, Timings, one_hot_prior
    from abdoseg.inference.pipeline import Predictor

    write_toy_nnunet_card(tmp_path, "3d_lowres", name="low", spacing=(6.0, 4.0, 4.0), patch=(8, 16, 16))
    card = write_toy_nnunet_card(tmp_path, "3d_cascade_fullres", name="cascade", previous_stage="low.json")
    image = synthetic_ct((14, 40, 44), (2.5, 1.2, 1.1))
    predictor = Predictor.load(card, runtime="onnxruntime")
    clock = Timings()
    labels = predictor.segment_image(image, clock)
    assert {"coarse preprocess", "coarse network", "preprocess", "network"} <= set(clock.seconds)
    assert predictor.session.description.startswith("nnU-Net 3d_cascade_fullres")
    fine, coarse = predictor.models
    array = sitk.GetArrayFromImage(image)
    spacing = image.GetSpacing()[::-1]
    prior = coarse.predict(array, spacing)
    assert len(np.unique(prior)) > 1
    np.testing.assert_array_equal(labels, fine.predict(array, spacing, prior))
    other = NnunetModel(fine.card, fine.ensemble).predict(array, spacing, np.zeros_like(prior))
    assert (other != labels).any()  # the coarse labels are an input that matters
    seg = np.zeros((4, 6, 6), np.uint8)
    seg[1:3, 2:4, 2:4] = 2
    hot = one_hot_prior(seg, (8, 12, 12), (2.0, 2.0, 2.0), (1.0, 1.0, 1.0), fine.card)
    resized = ndimage.zoom((seg == 2).astype(float), 2, order=1, mode="nearest", grid_mode=True)  # skimage's resize
    assert hot.shape == (2, 8, 12, 12) and not hot[0].any()
    np.testing.assert_array_equal(hot[1], resized > 0.5)  # two labels: the arg-max of their resized indicators


def test_model_folder_without_the_importer_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    from abdoseg.inference.cli import main

    monkeypatch.setitem(sys.modules, "abdoseg.importers.nnunet", None)  # as in the runtime image: no torch
    (tmp_path / "in").mkdir()
    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir()
    code = main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "needs the importer" in err[0] and str(folder) in err[0]
