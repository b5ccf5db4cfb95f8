"""Seed 001's recipe pieces: deep supervision heads, the KL consistency term, the sigmoid ramp-up."""
import math

import pytest
import torch

from abdoseg.training.losses import DiceCELoss
from abdoseg.training.pyramid import DS_WEIGHTS, PyramidUNet, consistency_kl, deep_supervision_loss, sigmoid_rampup


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_kl_is_zero_when_the_heads_agree_and_positive_otherwise():
    torch.manual_seed(0)
    same = torch.randn(2, 5, 4, 6, 6)
    assert float(consistency_kl([same.clone() for _ in range(4)])) == pytest.approx(0.0, abs=1e-6)
    different = [same + torch.randn_like(same) for _ in range(4)]
    assert float(consistency_kl(different)) > 1e-3
    shifted = [same + 3.0 for _ in range(4)]  # softmax ignores a constant per voxel: still agreement
    assert float(consistency_kl(shifted)) == pytest.approx(0.0, abs=1e-6)


def test_gradients_reach_every_head():
    torch.manual_seed(0)
    net = PyramidUNet(n_classes=5).train()
    outputs = net(torch.rand(1, 2, 16, 32, 32))
    assert len(outputs) == 4 and all(o.shape == (1, 5, 16, 32, 32) for o in outputs)
    target = torch.randint(0, 5, (1, 16, 32, 32))
    loss = deep_supervision_loss(outputs, target, DiceCELoss(torch.full((5,), 0.2).numpy())) + consistency_kl(outputs)
    loss.backward()
    for head in (net.head, *net.aux):
        assert head.weight.grad is not None and float(head.weight.grad.abs().sum()) > 0


def test_the_consistency_term_alone_reaches_every_head():
    torch.manual_seed(1)
    net = PyramidUNet(n_classes=3).train()
    consistency_kl(net(torch.rand(1, 2, 16, 32, 32))).backward()
    for head in (net.head, *net.aux):
        assert float(head.weight.grad.abs().sum()) > 0


def test_eval_mode_is_the_plain_network():
    net = PyramidUNet(n_classes=4).eval()
    out = net(torch.rand(1, 2, 16, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 4, 16, 32, 32)


def test_deep_supervision_weights_halve_and_sum_to_one():
    assert sum(DS_WEIGHTS) == pytest.approx(1.0)
    assert all(a == pytest.approx(2 * b) for a, b in zip(DS_WEIGHTS, DS_WEIGHTS[1:]))


def test_rampup_is_small_early_full_late_and_increasing():
    values = [sigmoid_rampup(t / 10) for t in range(11)]
    assert values[0] == pytest.approx(math.exp(-5)) and values[-1] == 1.0
    assert all(a < b for a, b in zip(values, values[1:]))
    assert sigmoid_rampup(-1) == values[0] and sigmoid_rampup(2) == 1.0
    assert sigmoid_rampup(0.5) == pytest.approx(math.exp(-1.25))
