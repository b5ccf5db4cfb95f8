"""Training of the fine network: samples through the fine stage's own preprocessing, patch sampling, a short
run, and the CLI writing weights + card that load through abdoseg.inference.fine.FineStage."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from abdoseg.inference.card import WEIGHTS_DIR
from abdoseg.inference.fine import FineStage
from abdoseg.inference.fine.card import Architecture, FineCard
from abdoseg.inference.fine.crop import organ_box
from abdoseg.inference.fine.preprocess import fine_grid_shape
from abdoseg.networks.fine_unet import FineUNet
from abdoseg.training.fine.cli import main
from abdoseg.training.fine.data import FineSample, find_pairs, fine_sample, read_scan_pair
from abdoseg.training.fine.train import TrainConfig, dice_per_organ, predict_sample, sample_patch, train

DATA = Path(__file__).resolve().parents[2] / "data" / "flare21"
TINY = Architecture(base_features=2, max_features=4, n_stages=3)


def _card(patch=(16, 32, 32)) -> FineCard:
    return FineCard(name="tiny", weights_file="fine.pt", sha256=None, architecture=TINY, patch_size=patch)


def _synthetic(shape=(20, 40, 30)) -> FineSample:
    labels = torch.zeros(shape, dtype=torch.int64)
    labels[5:10, 10:20, 5:15] = 1
    labels[12:14, 30:35, 20:25] = 4
    return FineSample("syn", torch.rand(2, *shape), labels)


def test_real_scan_sample_is_the_organ_box_on_the_fine_grid():
    case, image, label = next(p for p in find_pairs(DATA) if p[0] == "abdpelvis3mm")
    scan = read_scan_pair(case, image, label)
    sample = fine_sample(scan, _card())
    box = organ_box(scan.labels, scan.spacing, 20.0)
    assert tuple(sample.labels.shape) == fine_grid_shape(box.shape, scan.spacing, (2.5, 1.5, 1.5))
    assert sample.image.shape == (2, *sample.labels.shape) and sample.image.dtype == torch.float32
    assert 0.0 <= float(sample.image.min()) and float(sample.image.max()) <= 1.0
    assert set(torch.unique(sample.labels).tolist()) == {0, 1, 2, 3, 4}


def test_patches_pad_small_grids_and_foreground_patches_hold_organs():
    sample = _synthetic((20, 40, 30))
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, labels = sample_patch(sample, (32, 32, 32), rng, foreground=True)
        assert image.shape == (2, 32, 32, 32) and labels.shape == (32, 32, 32)
        assert labels.any()
        assert int((labels > 0).sum()) <= int((sample.labels > 0).sum())
    image, labels = sample_patch(sample, (16, 16, 16), rng, foreground=False)
    assert image.shape == (2, 16, 16, 16)


def test_short_run_returns_loadable_weights():
    result = train([_synthetic()], _card(), TrainConfig(max_iterations=3, batch_size=1, log_every=1))
    assert result.iterations == 3 and len(result.losses) == 3 and np.isfinite(result.losses).all()
    FineUNet(TINY).load_state_dict(result.state_dict)


def test_config_rejects_bad_budgets():
    with pytest.raises(ValueError, match="positive"):
        TrainConfig(max_minutes=0)
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_returns_cpu_weights_that_load():
    result = train([_synthetic()], _card(), TrainConfig(max_iterations=3, batch_size=2, log_every=1, device="cuda"))
    assert result.iterations == 3 and np.isfinite(result.losses).all()
    assert all(v.device.type == "cpu" for v in result.state_dict.values())
    FineUNet(TINY).load_state_dict(result.state_dict)


def test_cli_writes_weights_and_card_that_load(tmp_path, capsys):
    data = tmp_path / "data"  # one small case keeps this test short
    for sub, name in (("imagesTr", "abdpelvis3mm_0000.nii.gz"), ("labelsTr", "abdpelvis3mm.nii.gz")):
        (data / sub).mkdir(parents=True)
        (data / sub / name).symlink_to(DATA / sub / name)
    rc = main(["--data", str(data), "--out", str(tmp_path), "--base-features", "2", "--max-features", "4",
               "--stages", "3", "--patch", "16,32,32", "--max-iters", "1", "--batch-size", "1", "--threads", "2",
               "--skip-check"])
    assert rc == 0
    stage = FineStage.load(tmp_path, "cpu")
    assert stage.card.provenance.iterations == 1
    assert "TotalSegmentator" in stage.card.provenance.labels
    assert "wrote" in capsys.readouterr().err


def test_training_set_check_scores_the_sliding_window_prediction():
    labels = _synthetic((20, 40, 30)).labels
    image = torch.nn.functional.one_hot(labels, 5).permute(3, 0, 1, 2).float()
    net = torch.nn.Conv3d(5, 5, 1, bias=False)  # an oracle: logits = the one-hot labels fed in
    with torch.no_grad():
        net.weight.copy_(torch.eye(5)[:, :, None, None, None])
    card = dataclasses.replace(_card(), architecture=dataclasses.replace(TINY, in_channels=5),
                               windows=_card().windows * 2 + _card().windows[:1])
    pred = predict_sample(net, FineSample("syn", image, labels), card)
    assert dice_per_organ(pred, labels, "flare21") == [1.0, 1.0, 1.0, 1.0]  # kidneys, spleen absent in both: 1.0
    assert dice_per_organ(torch.zeros_like(labels), labels, "flare21")[0] == 0.0


def test_cli_reports_missing_data(tmp_path, capsys):
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "w")]) == 2
    assert "no imagesTr" in capsys.readouterr().err


# Seed 001's fine recipe as card options: the coarse network initialised from the coarse model, 40 mm margin,
# 2.0 x 1.5 x 1.5 mm, one window [-325, 325] standardised by global statistics.
COARSE_ONNX = WEIGHTS_DIR / "abdoseg_coarse.onnx"


def test_coarse_initialised_network_computes_the_coarse_organ_logits():
    from abdoseg.inference.fine.card import Architecture
    from abdoseg.training.fine.train import coarse_initialised
    from abdoseg.training.warm_start import network_from_onnx

    card = FineCard(name="c", weights_file="fine.pt", sha256=None, architecture=Architecture(kind="cobra"),
                    patch_size=(16, 32, 32))
    fine, coarse = coarse_initialised(card, COARSE_ONNX).eval(), network_from_onnx(COARSE_ONNX).eval()
    x = torch.rand(1, 2, 16, 32, 32)
    with torch.no_grad():
        a, b = fine(x), coarse(x)
    assert a.shape[1] == 5 and b.shape[1] == 6
    torch.testing.assert_close(a, b[:, 1:])  # background <- body, organs <- organs
    with pytest.raises(ValueError, match="6 classes, .* flare22 needs 15"):  # a FLARE21 coarse model for a FLARE22 fine card
        coarse_initialised(dataclasses.replace(card, labelset="flare22", keep_components={},
                                               architecture=Architecture(kind="cobra", n_classes=14)), COARSE_ONNX)


def test_global_intensity_is_the_clipped_organ_statistics():
    from abdoseg.inference.card import Window
    from abdoseg.training.fine.data import global_intensity

    scans = [read_scan_pair(*p) for p in find_pairs(DATA)]
    values = np.concatenate([np.clip(s.ct[s.labels > 0].astype(float), -325, 325) for s in scans])
    mean, std = global_intensity(scans, Window(level=0.0, width=650.0))
    assert mean == pytest.approx(values.mean(), abs=1e-3) and std == pytest.approx(values.std(), abs=1e-3)


@pytest.mark.slow
def test_cli_records_the_seed001_options_in_the_card(tmp_path):
    data = tmp_path / "data"
    for sub, name in (("imagesTr", "abdpelvis3mm_0000.nii.gz"), ("labelsTr", "abdpelvis3mm.nii.gz")):
        (data / sub).mkdir(parents=True)
        (data / sub / name).symlink_to(DATA / sub / name)
    common = ["--data", str(data), "--patch", "16,32,32", "--max-iters", "1", "--batch-size", "1", "--skip-check",
              "--margin-mm", "40", "--spacing", "4,3,3"]  # coarse, to keep the test short
    assert main([*common, "--out", str(tmp_path / "a"), "--kind", "cobra", "--init-from", str(COARSE_ONNX)]) == 0
    stage = FineStage.load(tmp_path / "a", "cpu")
    assert stage.card.architecture.kind == "cobra" and stage.card.margin_mm == 40.0
    assert stage.card.spacing == (4.0, 3.0, 3.0) and stage.card.global_intensity is None
    assert stage.card.provenance.initialised_from.startswith("abdoseg_coarse.onnx (sha256 ")
    assert main([*common, "--out", str(tmp_path / "b"), "--base-features", "2", "--max-features", "4", "--stages", "3",
                 "--window", "-325", "325", "--global-norm"]) == 0
    stage = FineStage.load(tmp_path / "b", "cpu")
    assert [(w.low, w.high) for w in stage.card.windows] == [(-325.0, 325.0)]
    mean, std = stage.card.global_intensity
    assert -325 < mean < 325 and std > 0
    scan = read_scan_pair(*find_pairs(data)[0])
    image = fine_sample(scan, stage.card).image  # the stage's own preprocessing: standardised, one channel
    assert image.shape[0] == 1 and float(image.min()) == pytest.approx((-325 - mean) / std, abs=1e-4)
    ct, coarse = scan.ct[::4, ::4, ::4], scan.labels[::4, ::4, ::4]
    labels, _ = stage.run(ct, tuple(s * 4 for s in scan.spacing), coarse)
    assert labels.shape == ct.shape


def test_card_refuses_options_that_do_not_fit_together():
    from abdoseg.inference.card import CardError, Window

    with pytest.raises(CardError, match="cobra architecture takes 2 input channels"):
        Architecture(kind="cobra", in_channels=1)
    with pytest.raises(CardError, match="standardises one HU window"):
        FineCard(name="x", weights_file="fine.pt", sha256=None, patch_size=(16, 32, 32), global_intensity=(0.0, 1.0))
    card = FineCard(name="x", weights_file="fine.pt", sha256=None, patch_size=(16, 32, 32), global_intensity=(1.0, 2.0),
                    windows=(Window(0.0, 650.0),), architecture=Architecture(in_channels=1))
    assert FineCard.from_dict(__import__("json").loads(card.to_json())) == card
