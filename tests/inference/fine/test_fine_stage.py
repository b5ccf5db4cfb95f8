"""FineStage end to end on CPU with tiny networks; the card and weights contract; import without torch."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # the fine stage's torch path

from abdoseg.inference.card import CardError  # noqa: E402
from abdoseg.inference.fine import FineStage, load_fine_card  # noqa: E402
from abdoseg.inference.fine.card import Architecture, Provenance  # noqa: E402
from abdoseg.networks.fine_unet import FineUNet  # noqa: E402
from tests.helpers.fine import TINY, biased_network, tiny_card  # noqa: E402


def _scan(shape=(40, 96, 90)):
    rng = np.random.default_rng(0)
    ct = rng.normal(0, 150, size=shape).astype(np.int16)
    coarse = np.zeros(shape, np.uint8)
    coarse[15:25, 40:60, 30:50] = 1
    return ct, coarse


def test_import_does_not_load_torch():
    code = ("import sys, abdoseg.inference, abdoseg.inference.fine, abdoseg.inference.fine.crop; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_network_shapes_and_default_architecture():
    net = FineUNet(TINY)
    assert net(torch.zeros(1, 2, 16, 32, 32)).shape == (1, 5, 16, 32, 32)
    arch = Architecture()
    assert arch.features == (32, 64, 128, 256, 320) and arch.divisor == 16


def test_run_returns_uint8_labels_on_the_full_grid_with_the_crop_pasted():
    ct, coarse = _scan()
    stage = FineStage.from_network(tiny_card(), biased_network(1), "cpu")
    labels, info = stage.run(ct, (2.5, 1.0, 1.2), coarse)
    assert labels.shape == ct.shape and labels.dtype == np.uint8
    # box = organs + 20 mm: 8, 20, 17 voxels of margin, clipped to the scan
    box = (slice(7, 33), slice(20, 80), slice(13, 67))
    assert np.all(labels[box] == 1)
    assert np.count_nonzero(labels) == labels[box].size
    assert info["crop_voxels"] == labels[box].size and info["no_organ"] == 0.0
    stage_s = sum(info[k] for k in ("crop_s", "preprocess_s", "network_s", "resize_s", "cleanup_s", "paste_s"))
    assert info["total_s"] == pytest.approx(stage_s)
    assert "gpu_peak_allocated_bytes" not in info  # CPU run: no GPU figures


def test_run_with_random_weights_gives_valid_labels():
    ct, coarse = _scan()
    torch.manual_seed(3)
    stage = FineStage.from_network(tiny_card(), FineUNet(TINY), "cpu")
    labels, info = stage.run(ct.astype(np.float32), (2.5, 1.0, 1.2), coarse)
    assert labels.shape == ct.shape and labels.dtype == np.uint8 and labels.max() <= 4
    assert info["windows"] >= 1 and info["grid_voxels"] > 0


def test_cleanup_keeps_the_largest_component():
    """A network that calls bright voxels spleen: a big and a small bright blob; only the big one survives."""

    class Threshold(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 5, *x.shape[2:])
            out[:, 3] = 10.0 * (x[:, 0] - 0.5)  # window W400/L50: > 50 HU
            return out

    ct = np.full((40, 96, 90), -1000, np.int16)
    ct[16:24, 40:60, 30:50] = 200
    ct[16:19, 70:76, 60:66] = 200
    coarse = (ct > 0).astype(np.uint8)
    stage = FineStage.from_network(tiny_card(), Threshold(), "cpu")
    labels, _ = stage.run(ct, (2.5, 1.0, 1.2), coarse)
    assert not labels[16:19, 70:76, 60:66].any()
    assert np.count_nonzero(labels[16:24, 40:60, 30:50] == 3) > 0.8 * 8 * 20 * 20
    assert set(np.unique(labels)) == {0, 3}
    keep_all = dataclasses.replace(tiny_card(), keep_components={})
    labels, _ = FineStage.from_network(keep_all, Threshold(), "cpu").run(ct, (2.5, 1.0, 1.2), coarse)
    assert labels[16:19, 70:76, 60:66].any()  # without the cleanup the small blob is there


def test_no_organ_falls_back_to_the_whole_scan():
    ct, _ = _scan((20, 48, 40))
    stage = FineStage.from_network(tiny_card(), biased_network(2), "cpu")
    labels, info = stage.run(ct, (2.0, 1.5, 1.5), np.zeros(ct.shape, np.uint8))
    assert info["no_organ"] == 1.0 and info["crop_voxels"] == ct.size
    assert np.all(labels == 2)  # the whole scan went through the network (one kidney blob spans it)


def test_bad_inputs_raise_value_errors():
    stage = FineStage.from_network(tiny_card(), biased_network(1), "cpu")
    ct, coarse = _scan((10, 20, 20))
    with pytest.raises(ValueError, match="one shape"):
        stage.run(ct, (1.0, 1.0, 1.0), coarse[:5])
    with pytest.raises(ValueError, match="spacing"):
        stage.run(ct, (1.0, 0.0, 1.0), coarse)
    with pytest.raises(ValueError, match="'tpu'"):
        FineStage.from_network(tiny_card(), biased_network(1), "tpu")


def test_load_round_trip_and_checksum(tmp_path):
    from abdoseg.inference.card import sha256_of

    net = biased_network(4)
    torch.save(net.state_dict(), tmp_path / "fine.pt")
    card = dataclasses.replace(tiny_card(), sha256=sha256_of(tmp_path / "fine.pt"),
                               provenance=Provenance(data="synthetic"))
    card.save(tmp_path / "fine.json")
    stage = FineStage.load(tmp_path, "cpu")
    assert stage.card == card
    ct, coarse = _scan((20, 48, 40))
    labels, _ = stage.run(ct, (2.0, 1.5, 1.5), coarse)
    assert labels.max() == 4

    (tmp_path / "fine.pt").write_bytes(b"corrupt")
    with pytest.raises(CardError, match="sha256"):
        load_fine_card(tmp_path)


def test_card_rejects_bad_fields(tmp_path):
    with pytest.raises(CardError, match="multiples of 4"):
        dataclasses.replace(tiny_card(), patch_size=(16, 30, 32))
    with pytest.raises(CardError, match="windows"):
        dataclasses.replace(tiny_card(), windows=())
    text = tiny_card().to_json().replace('"margin_mm"', '"margin_cm"')
    (tmp_path / "fine.json").write_text(text)
    with pytest.raises(CardError, match="margin_cm"):
        load_fine_card(tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_matches_cpu_and_reports_gpu_memory():
    ct, coarse = _scan()
    torch.manual_seed(5)
    net = FineUNet(TINY)
    cpu_labels, _ = FineStage.from_network(tiny_card(), net, "cpu").run(ct, (2.5, 1.0, 1.2), coarse)
    gpu_labels, info = FineStage.from_network(tiny_card(), net, "cuda").run(ct, (2.5, 1.0, 1.2), coarse)
    assert gpu_labels.shape == cpu_labels.shape and gpu_labels.dtype == np.uint8
    assert np.mean(gpu_labels == cpu_labels) > 0.99  # fp16 autocast may flip near-ties
    assert info["gpu_peak_allocated_bytes"] > 0 and info["gpu_in_use_bytes"] >= info["gpu_peak_allocated_bytes"]


def test_the_shipped_fine_weights_are_found_and_a_missing_file_is_named(tmp_path):
    from abdoseg.inference.fine import fine_weights_missing

    assert fine_weights_missing() is None  # abdoseg/weights/fine.json + fine.pt (trained on a GPU)
    assert fine_weights_missing(tmp_path) == f"no fine weights are in {tmp_path}"
