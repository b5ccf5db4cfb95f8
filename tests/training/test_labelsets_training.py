"""Training reads its label set from the config: labels checked, classes, names, warm start."""
from pathlib import Path

import numpy as np
import pytest
import torch

from abdoseg.training.data import Case, read_canonical
from abdoseg.training.train import TrainConfig, build_network, init_weights, network_classes, organ_names, sample_center
from tests.helpers import DATA

CASE = "upperabd1mm"


def _case(labels: str) -> Case:
    return Case(CASE, DATA / "flare21" / "imagesTr" / f"{CASE}_0000.nii.gz", DATA / labels / "labelsTr" / f"{CASE}.nii.gz")


def test_flare22_labels_are_read_under_flare22_and_refused_under_flare21():
    _, labels, _ = read_canonical(_case("flare22"), labelset="flare22")
    assert labels.max() > 4
    with pytest.raises(ValueError, match="flare21 labels must lie in 0..4"):
        read_canonical(_case("flare22"))


def test_network_classes_and_names_follow_the_label_set():
    assert network_classes("flare21") == 6 and network_classes("flare22") == 15
    assert organ_names("flare22")[-1] == "left_kidney" and len(organ_names("flare22")) == 13
    torch.manual_seed(0)
    out = build_network("flare22").eval()(torch.zeros(1, 2, 16, 32, 32))
    assert out.shape == (1, 15, 16, 32, 32)


def test_config_keeps_its_label_set_and_refuses_unknown_ones():
    cfg = TrainConfig(data="x", labelset="flare22")
    assert TrainConfig.from_json(cfg.to_json()).labelset == "flare22"
    with pytest.raises(ValueError, match="unknown label set"):
        TrainConfig(data="x", labelset="nope")


def test_warm_start_from_another_label_set_keeps_all_but_the_head(tmp_path: Path):
    torch.manual_seed(0)
    source = build_network("flare21")
    torch.save({"model": source.state_dict()}, tmp_path / "w.pt")
    torch.manual_seed(1)
    target = build_network("flare22")
    fresh = init_weights(target, tmp_path / "w.pt", "cpu")
    assert fresh == ["head.weight", "head.bias"]
    src, dst = source.state_dict(), target.state_dict()
    assert all(torch.equal(dst[k], v) for k, v in src.items() if not k.startswith("head."))
    assert target.head.weight.shape[0] == 15


def test_crop_centres_reach_every_organ_class_of_a_large_label_set():
    classes = np.ones((8, 8, 8), np.uint8)
    classes[0, 0, 0], classes[7, 7, 7] = 14, 9
    rng = np.random.default_rng(0)
    centres = {tuple(sample_center(classes, rng, organ_p=1.0).astype(int)) for _ in range(40)}
    assert centres == {(0, 0, 0), (7, 7, 7)}
