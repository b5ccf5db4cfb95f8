"""Warm start from the shipped ONNX: the rebuilt torch network computes what the file computes; frozen norms."""
import numpy as np
import pytest
import torch

from abdoseg.inference.card import card_path, load_card
from abdoseg.training.data import Resampler, find_cases, read_canonical
from abdoseg.training.export import torch_classes
from abdoseg.training.warm_start import network_from_onnx
from tests.helpers import DATA


@pytest.mark.slow
# FLARE21 (6 classes) and FLARE22 (15): every layer
@pytest.mark.parametrize("card_spec", [card_path("flare21-fp32"), "flare22"])
def test_rebuilt_network_agrees_with_the_shipped_file_on_a_real_scan(card_spec):
    import onnxruntime as ort

    card, path = load_card(card_spec)
    model = network_from_onnx(path)
    case = next(c for c in find_cases(DATA / "flare21") if c.name == "abdpelvis3mm")
    hu, _, spacing = read_canonical(case)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shipped = session.run(["classes"], {"ct": hu, "spacing": np.asarray(spacing, np.float32)})[0]
    rebuilt = torch_classes(model, Resampler(card.geometry), hu, spacing)
    assert (shipped == rebuilt).mean() >= 0.9999


def test_frozen_norm_keeps_running_statistics_in_training_mode():
    from abdoseg.networks.cobra_unet import CobraUNet

    model = CobraUNet(frozen_norm=True).train()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms and not any(m.training for m in norms)
    before = [m.running_mean.clone() for m in norms]
    model(torch.rand(2, 2, 16, 32, 32))
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before, norms))
    assert CobraUNet().train().stem.post[0].training  # the default still trains its norms
