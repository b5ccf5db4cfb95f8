"""A quick real training run (small grid, small crops): the loss falls, checkpoints resume exactly."""
import json

import pytest
import torch

from abdoseg.training.train import TrainConfig, split_cases, train
from tests.helpers.training import QUICK


def test_loss_falls_and_the_run_folder_is_complete(quick_run):
    history = [json.loads(line) for line in (quick_run / "train_log.jsonl").read_text().splitlines()]
    assert len(history) == 5
    first, last = history[0]["train_loss"], history[-1]["train_loss"]
    assert last < 0.8 * first, (first, last)
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    for name in ("best.pt", "last.pt", "config.json", "curves.png", "train_log.jsonl"):
        assert (quick_run / name).is_file(), name
    assert TrainConfig.from_json((quick_run / "config.json").read_text()) == TrainConfig(epochs=5, **QUICK)


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(TrainConfig(epochs=2, **{**QUICK, "iters_per_epoch": 3}), straight, progress=False)
    train(TrainConfig(epochs=1, **{**QUICK, "iters_per_epoch": 3}), resumed, progress=False)
    train(TrainConfig(epochs=2, **{**QUICK, "iters_per_epoch": 3}), resumed, resume=True, progress=False)
    a = torch.load(straight / "last.pt", weights_only=False)
    b = torch.load(resumed / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 1
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, msg=k)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        train(TrainConfig(epochs=1, **QUICK), tmp_path, resume=True, progress=False)


def test_folds_split_cases_and_refuse_too_many():
    cases = ["a", "b", "c"]
    train_cases, val = split_cases(cases, 3, 1)
    assert val == ["b"] and train_cases == ["a", "c"]
    assert split_cases(cases, 1, 0) == (cases, cases)
    with pytest.raises(ValueError, match="need at least 4 cases"):
        split_cases(cases, 4, 0)
    with pytest.raises(ValueError, match="fold must satisfy"):
        TrainConfig(data="x", folds=2, fold=2)


def test_crop_centres_visit_small_organs_as_often_as_large_ones():
    import numpy as np

    from abdoseg.training.train import sample_center

    classes = np.ones((20, 40, 40), np.uint8)
    classes[:, :30, :30] = 2  # a large "liver"
    classes[5, 35, 35] = 4  # a one-voxel "spleen"
    rng = np.random.default_rng(0)
    centres = [tuple(sample_center(classes, rng, organ_p=1.0).astype(int)) for _ in range(400)]
    spleen = sum(c == (5, 35, 35) for c in centres)
    assert 150 < spleen < 250  # about half the organ draws, although it is 1/18,000 of the organ voxels


@pytest.mark.slow
def test_init_from_starts_from_a_checkpoint(quick_run, tmp_path):
    """Fine-tuning: with a zero learning rate the convolution weights stay those of the checkpoint."""
    cfg = TrainConfig(epochs=1, lr=0.0, init_from=str(quick_run / "best.pt"), **{**QUICK, "iters_per_epoch": 1})
    train(cfg, tmp_path, progress=False)
    before = torch.load(quick_run / "best.pt", weights_only=False)["model"]
    after = torch.load(tmp_path / "last.pt", weights_only=False)["model"]
    conv = [k for k in before if k.endswith("weight") and before[k].ndim == 5]
    assert conv and all(torch.equal(before[k], after[k]) for k in conv)
