"""The architecture registry: published parameter counts, shapes, deep supervision, ONNX export, table."""
import numpy as np
import pytest
import torch

from abdoseg.networks.flops import forward_flops
from abdoseg.networks.onnx_export import slices_onnx_bytes
from abdoseg.networks.registry import (
    ARCHITECTURES,
    SLICE_ARCHITECTURES,
    build,
    count_parameters,
    get,
    set_deep_supervision,
)

# tiny widths and the smallest input each 2D network's strides allow (nnU-Net's 2D plan has 8 resolutions)
TINY = {"vgg13_unet_ds": (1 / 16, (64, 48)), "nnunet2d": (1 / 16, (256, 128)), "hrnet48_ocr": (1 / 16, (64, 96))}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: more threads only contend on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def _full_width_parameters(name: str) -> int:
    with torch.device("meta"):  # shapes only: no 70 M-parameter allocation
        return count_parameters(build(name))


@pytest.mark.parametrize("name", ["nnunet2d", "hrnet48_ocr"])
def test_standard_designs_have_the_papers_exact_parameter_count_at_five_classes(name):
    assert _full_width_parameters(name) == get(name).paper_parameters
    assert get(name).paper_parameters in (41_268_192, 70_354_170)


def test_vgg13_unet_is_within_one_percent_of_the_papers_count():
    n = _full_width_parameters("vgg13_unet_ds")
    assert abs(n - 30_146_777) / 30_146_777 < 0.01, n


def test_existing_networks_are_registered_with_their_counts():
    assert _full_width_parameters("cobra") == 436_982
    with torch.device("meta"):
        fine = build("fine_unet", width=0.25)
    assert fine.arch.features == (8, 16, 32, 64, 80)
    with pytest.raises(ValueError, match="cobra"):
        build("cobra", n_classes=5)
    with pytest.raises(ValueError, match="unknown architecture 'unet9'"):
        get("unet9")


def test_width_scales_the_count_and_class_count_only_changes_the_heads():
    for name in SLICE_ARCHITECTURES:
        with torch.device("meta"):
            small, five, nine = build(name, width=0.25), build(name, width=1 / 16), build(name, n_classes=9, width=1 / 16)
        assert count_parameters(five) < count_parameters(small) < _full_width_parameters(name) / 10
        assert 0 < count_parameters(nine) - count_parameters(five) < 5_000


@pytest.mark.parametrize("name", SLICE_ARCHITECTURES)
def test_tiny_width_forward_shapes_and_deep_supervision_outputs(name):
    width, hw = TINY[name]
    torch.manual_seed(0)
    model = build(name, width=width).train()
    x = torch.rand(2, get(name).in_channels, *hw)
    outputs = model(x)
    assert isinstance(outputs, list) and len(outputs) >= 2  # deep supervision: several logits
    assert outputs[0].shape == (2, 5, *hw)
    for coarse in outputs[1:]:
        assert coarse.shape[:2] == (2, 5) and all(c <= f for c, f in zip(coarse.shape[2:], hw))
    sum(o.mean() for o in outputs).backward()  # every head is connected to the parameters
    assert all(p.grad is not None for p in model.parameters())
    main = set_deep_supervision(model.eval(), False)(x)
    assert isinstance(main, torch.Tensor) and main.shape == (2, 5, *hw)


def test_deep_supervision_counts_match_the_designs():
    counts = {}
    for name in SLICE_ARCHITECTURES:
        width, hw = TINY[name]
        with torch.no_grad():
            counts[name] = len(build(name, width=width)(torch.rand(1, get(name).in_channels, *hw)))
    assert counts == {"vgg13_unet_ds": 5, "nnunet2d": 7, "hrnet48_ocr": 2}


def _randomise_norm_statistics(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLICE_ARCHITECTURES)
def test_onnx_export_agrees_with_torch_on_a_batch_of_another_size(name):
    ort = pytest.importorskip("onnxruntime")
    width, hw = TINY[name]
    torch.manual_seed(0)
    model = build(name, width=width)
    _randomise_norm_statistics(model)
    session = ort.InferenceSession(slices_onnx_bytes(model, get(name).in_channels, hw), providers=["CPUExecutionProvider"])
    assert model.deep_supervision  # the export leaves the training model as it was
    x = torch.rand(3, get(name).in_channels, *hw)  # exported with a batch of 2
    with torch.no_grad():
        expected = set_deep_supervision(model.eval(), False)(x).numpy()
    (got,) = session.run(["logits"], {"slices": x.numpy()})
    assert got.shape == expected.shape == (3, 5, *hw)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


def test_flop_counter_counts_two_per_multiply_add():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert forward_flops(conv, (1, 3, 16, 16)) == 2 * 16 * 16 * 8 * 3 * 9


@pytest.mark.slow
def test_architectures_command_prints_every_network(capsys):
    from abdoseg.training.cli import main

    assert main(["architectures", "--width", "0.0625"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "seed", "parameters"]
    assert {line.split()[0] for line in lines[2:]} == set(ARCHITECTURES)
