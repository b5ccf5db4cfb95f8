"""The torch-free fine stage (the fine card's ONNX graph in OpenVINO / onnxruntime) and the two-stage card."""
import dataclasses
import json

import numpy as np
import pytest

from abdoseg.inference import cli
from abdoseg.inference.card import NAMED_CARDS, WEIGHTS_DIR, CardError, load_card, sha256_of
from abdoseg.inference.fine import FineGraphStage, open_fine_stage
from abdoseg.inference.fine.card import FineCard, OrganScore, fine_verdict, load_fine_card
from abdoseg.inference.fine.graph_stage import network_input
from abdoseg.inference.fine.crop import organ_box
from abdoseg.inference.fine.grid import fine_grid_shape, grid_spacing, resample_numpy, resize_maps
from abdoseg.training.quantize import MAX_DSC_CHANGE, MIN_AGREEMENT
from tests.helpers import CASES, real_image, real_label

INT8_CARD = WEIGHTS_DIR / "fine_int8.json"
FP32_CARD = WEIGHTS_DIR / "fine.json"


def _card() -> FineCard:
    return FineCard.from_dict(json.loads(INT8_CARD.read_text()))


def test_the_numpy_resample_is_the_three_axis_maps():
    rng = np.random.default_rng(0)
    volume = rng.integers(-1000, 1000, (7, 30, 26)).astype(np.int16)
    out = resample_numpy(volume, (9, 14, 13), chunk_slices=3)
    wz, wy, wx = (m.weights() for m in resize_maps(volume.shape, (9, 14, 13)))
    expected = np.einsum("ai,bj,ck,ijk->abc", wz, wy, wx, volume.astype(np.float64))
    assert out.dtype == np.float32 and np.allclose(out, expected, atol=1e-3)


def test_the_network_input_is_the_windows_on_the_fine_grid_padded_with_air():
    card = _card()
    crop = np.full((20, 50, 40), 40, np.int16)  # 40 HU: inside both windows
    image, shape = network_input(crop, (2.0, 1.5, 1.5), card)
    assert shape == (20, 50, 40) and image.shape == (1, 2, 32, 64, 48)  # padded to multiples of 16
    for c, w in enumerate(card.windows):
        assert np.allclose(image[0, c, :20, :50, :40], (40 - w.low) / w.width)
        assert not image[0, c, 20:].any() and not image[0, c, :, 50:].any()  # air: 0 in both windows


def test_the_shipped_fine_cards_name_their_graphs_with_checksums():
    for path in (FP32_CARD, INT8_CARD):
        card, _ = load_fine_card(path)
        assert card.network_file is not None
        assert sha256_of(WEIGHTS_DIR / card.network_file) == card.network_sha256


def test_the_int8_graph_passed_the_coarse_cards_gate():
    gate = _card().provenance.quantization["gate"]
    assert gate["min_agreement"] == MIN_AGREEMENT and gate["max_dsc_change"] == MAX_DSC_CHANGE
    assert set(gate["measured"]) == set(CASES)
    for figures in gate["measured"].values():
        assert figures["agreement"] >= MIN_AGREEMENT
        assert all(abs(d) <= MAX_DSC_CHANGE for d in figures["dsc_change"].values())


def test_the_two_stage_card_records_its_win_on_every_organ_so_auto_runs_it_on_a_cpu(monkeypatch):
    card, model = load_card("flare21-fine")
    coarse, coarse_model = load_card("flare21")
    assert model == coarse_model and card.sha256 == coarse.sha256  # the coarse stage is the flare21 card's
    assert card.fine == str(INT8_CARD) and fine_verdict(_card(), card.labelset) is None
    monkeypatch.setattr(cli, "gpu_present", lambda: False)
    assert cli.resolve_stages("auto", "flare21-fine", None) == ("cpu", True, "")
    assert cli.resolve_stages("auto", "flare21", None) == ("cpu", False, "")


def test_auto_passes_over_a_fine_stage_whose_record_loses(tmp_path, monkeypatch):
    for name in ("abdoseg_coarse_int8.onnx", "fine_int8.onnx"):
        (tmp_path / name).symlink_to(WEIGHTS_DIR / name)
    record = _card().validation
    card = dataclasses.replace(_card(), validation=dataclasses.replace(
        record, fine={**record.fine, "liver": OrganScore(0.5, 0.5)}))
    card.save(tmp_path / "fine_int8.json")
    two_stage = json.loads(NAMED_CARDS["flare21-fine"].read_text())
    (tmp_path / "two.json").write_text(json.dumps({**two_stage, "locator": None}))
    monkeypatch.setattr(cli, "gpu_present", lambda: False)
    device, fine, note = cli.resolve_stages("auto", str(tmp_path / "two.json"), None)
    assert (device, fine) == ("cpu", False) and note.startswith("fine stage not used: it loses on liver (DSC 0.500")
    assert cli.resolve_stages("cpu", str(tmp_path / "two.json"), None) == ("cpu", True, "")


def test_a_card_without_a_fine_stage_never_runs_one_whatever_the_device():
    from abdoseg.inference.pipeline import Predictor

    assert cli.resolve_stages("cuda", "flare22", None) == ("cuda", False, "")
    assert Predictor.load("flare22", runtime="onnxruntime", device="cuda").fine is None
    assert Predictor.load("flare21-fine", runtime="onnxruntime", fine=False).fine is None


def test_a_fine_card_without_a_graph_cannot_run_without_torch(tmp_path):
    card = dataclasses.replace(_card(), network_file=None, network_sha256=None)
    card.save(tmp_path / "fine.json")
    with pytest.raises(CardError, match="names no network_file"):
        FineGraphStage.load(tmp_path, "onnxruntime")


def test_a_tampered_graph_is_refused(tmp_path):
    _card().save(tmp_path / "fine_int8.json")
    (tmp_path / "fine_int8.onnx").write_bytes(b"not the graph")
    with pytest.raises(CardError, match="sha256"):
        FineGraphStage.load(tmp_path / "fine_int8.json", "onnxruntime")


def test_the_stage_cleans_up_on_the_fine_grid_with_its_spacing(monkeypatch):
    from abdoseg.inference import postprocess

    seen = {}
    real = postprocess.keep_largest_components

    def spy(labels, keep, connectivity=26, spacing=(1.0, 1.0, 1.0)):
        seen["shape"], seen["spacing"] = labels.shape, spacing
        return real(labels, keep, connectivity, spacing)

    monkeypatch.setattr(postprocess, "keep_largest_components", spy)
    stage = open_fine_stage(INT8_CARD, "cpu", "onnxruntime", 1)
    ct = np.full((30, 64, 60), -1000, np.int16)
    coarse = np.zeros(ct.shape, np.uint8)
    coarse[10:20, 20:40, 20:40] = 1
    labels, info = stage.run(ct, (3.0, 0.8, 0.8), coarse)
    assert labels.shape == ct.shape and labels.dtype == np.uint8
    box = organ_box(coarse, (3.0, 0.8, 0.8), stage.card.margin_mm)
    assert seen["shape"] == fine_grid_shape(box.shape, (3.0, 0.8, 0.8), stage.card.spacing)
    assert np.prod(seen["shape"]) == info["grid_voxels"] and info["crop_voxels"] == np.prod(box.shape)
    assert seen["spacing"] == pytest.approx(grid_spacing(box.shape, (3.0, 0.8, 0.8), seen["shape"]))
    assert seen["spacing"] == pytest.approx((2.0, 1.5, 1.5), rel=0.05)
    parts = ("crop", "preprocess", "network", "cleanup", "resize", "paste")
    assert sum(info[f"{p}_s"] for p in parts) == pytest.approx(info["total_s"])


@pytest.mark.slow
def test_the_two_stage_card_finds_the_pancreas_alike_in_both_runtimes():
    """On abdpelvis3mm: pancreas DSC >= 0.70 where the coarse card finds none; OpenVINO and onnxruntime labels
    equal up to INT8 rounding (both stages INT8)."""
    import SimpleITK as sitk

    from abdoseg.evaluation.metrics import dice
    from abdoseg.inference.pipeline import Predictor

    image = sitk.ReadImage(str(real_image("abdpelvis3mm")))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(real_label("abdpelvis3mm"))))
    ov, ort = (Predictor.load("flare21-fine", runtime=rt, threads=2).segment_image(image)
               for rt in ("openvino", "onnxruntime"))
    coarse = Predictor.load("flare21", runtime="openvino", threads=2).segment_image(image)
    assert dice(ref == 4, ov == 4) >= 0.70 and not (coarse == 4).any()
    assert np.mean(ov == ort) >= 0.999
    for label in (1, 2, 3):
        assert dice(ref == label, ov == label) >= dice(ref == label, coarse == label)
