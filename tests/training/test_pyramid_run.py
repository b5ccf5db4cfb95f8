"""A short run of the seed-001 recipe: deep supervision + `--unlabelled` re-framed copies of the real scans."""
import json

import pytest

from abdoseg.inference.card import load_card
from abdoseg.training.export import export_run
from abdoseg.training.reframe import VARIANTS, write_variants
from abdoseg.training.train import TrainConfig, train
from tests.helpers import DATA
from tests.helpers.training import QUICK


@pytest.fixture(scope="module")
def unlabelled_run(tmp_path_factory):
    variants = write_variants(DATA / "flare21", tmp_path_factory.mktemp("reframed"), (VARIANTS[0],))
    run = tmp_path_factory.mktemp("ssl_run")
    cfg = TrainConfig(epochs=2, **{**QUICK, "iters_per_epoch": 3, "deep_supervision": True,
                                   "unlabelled": str(variants[0])})
    train(cfg, run, progress=False)
    return run


@pytest.mark.slow
def test_a_run_with_unlabelled_scans_logs_both_loss_terms(unlabelled_run):
    records = [json.loads(line) for line in (unlabelled_run / "train_log.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert r["train_supervised_loss"] > 0 and r["train_consistency_loss"] > 0
    assert records[0]["consistency_weight"] < records[1]["consistency_weight"] == pytest.approx(0.1)
    cfg = json.loads((unlabelled_run / "config.json").read_text())
    assert cfg["deep_supervision"] and cfg["unlabelled"]


@pytest.mark.slow
def test_the_deep_supervision_run_exports_the_plain_network(unlabelled_run, tmp_path):
    onnx_path, card_path = export_run(unlabelled_run, tmp_path, name="ssl", recipe="pytest")
    card, _ = load_card(card_path)
    assert card.num_classes == 6 and onnx_path.is_file()


def test_unlabelled_scans_need_deep_supervision():
    with pytest.raises(ValueError, match="deep supervision"):
        TrainConfig(data="x", unlabelled="y")
