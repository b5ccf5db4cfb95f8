"""Export: one composed ONNX graph + card; torch/onnxruntime parity; the card runs in the inference pipeline."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.card import card_path, load_card, verify_checksum
from abdoseg.inference.pipeline import Predictor
from abdoseg.training.data import Resampler, find_cases, read_canonical
from abdoseg.training.export import PARITY_MIN, ExportError, export_run, load_run, torch_classes
from tests.helpers import CASES, real_image, real_label

FP32_CARD = card_path("flare21-fp32")


@pytest.fixture(scope="module")
def diverse_run(quick_run, tmp_path_factory):
    """The quick run folder with a network whose labels vary voxel to voxel (so parity means something):
    seeded random weights, BatchNorm statistics taken from a real scan."""
    import shutil

    import torch

    from abdoseg.networks.cobra_unet import CobraUNet
    from abdoseg.training.windows import hu_to_channels

    run = tmp_path_factory.mktemp("diverse_run")
    for name in ("config.json", "train_log.jsonl", "curves.png"):
        shutil.copy(quick_run / name, run / name)
    cfg = load_run(quick_run)[0]
    torch.manual_seed(0)
    model = CobraUNet()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.momentum = None  # cumulative average over the calibration pass
    hu, _, spacing = read_canonical(find_cases(cfg.data)[0])
    with torch.no_grad():
        model.train()(hu_to_channels(torch.from_numpy(Resampler(cfg.geometry)(hu, spacing)))[None])
    torch.save({"model": model.state_dict(), "epoch": 0, "record": {}}, run / "best.pt")
    return run


@pytest.fixture(scope="module")
def exported(diverse_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("weights")
    return export_run(diverse_run, out, name="quick", recipe="pytest quick run")


@pytest.mark.slow
def test_export_writes_a_checked_card_with_parity_and_provenance(exported, diverse_run):
    onnx_path, card_path = exported
    card, model_path = load_card(card_path)
    verify_checksum(card, model_path)
    assert model_path == onnx_path and card.graph == "composed"
    assert card.provenance["parameters"] == 436_982
    assert len(card.provenance["parity"]) == 4 and min(card.provenance["parity"].values()) >= PARITY_MIN
    assert "NOT a clinical model" in card.provenance["warning"]
    for extra in ("quick.train_log.jsonl", "quick.curves.png"):
        assert (onnx_path.parent / extra).is_file()
    # the parity check compared something: the quick model predicts several classes on a real scan
    cfg, model, _ = load_run(diverse_run)
    hu, _, spacing = read_canonical(find_cases(cfg.data)[0])
    assert len(np.unique(torch_classes(model, Resampler(cfg.geometry), hu, spacing))) >= 3


@pytest.mark.slow
def test_the_composed_graph_takes_any_input_size(exported):
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    for shape in ((20, 50, 40), (64, 33, 100)):
        out = session.run(["classes"], {"ct": np.full(shape, -1000, np.int16)})[0]
        assert out.shape == (32, 64, 64) and out.dtype == np.uint8


def test_exported_card_segments_a_real_scan_in_the_pipeline(exported):
    predictor = Predictor.load(exported[1], runtime="onnxruntime", threads=2)
    image = sitk.ReadImage(str(real_image("upperabd1mm")))
    labels = predictor.segment_image(image)
    assert labels.shape == sitk.GetArrayViewFromImage(image).shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(ExportError, match="config.json: missing"):
        export_run(tmp_path, tmp_path / "w")


def _dice(a, b):
    s = a.sum() + b.sum()
    return 2 * (a & b).sum() / s


@pytest.mark.slow
@pytest.mark.skipif(not FP32_CARD.is_file(), reason="shipped weights not built yet (python -m abdoseg export)")
@pytest.mark.parametrize("case", CASES)
def test_shipped_weights_reach_090_on_their_training_scans(case):
    """Golden end-to-end check of the shipped weights: liver, kidneys, spleen DSC >= 0.90 (these ARE its training
    scans)."""
    predictor = Predictor.load(FP32_CARD, runtime="onnxruntime", threads=2)
    pred = predictor.segment_image(sitk.ReadImage(str(real_image(case))))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(real_label(case))))
    for label in (1, 2, 3):
        if (truth == label).any():
            assert _dice(pred == label, truth == label) >= 0.90, (case, label)
    card, _ = load_card(FP32_CARD)
    assert json.loads(FP32_CARD.read_text())["provenance"]["parameters"] == 436_982 and card.graph == "composed"


@pytest.mark.slow
@pytest.mark.skipif(not FP32_CARD.is_file(), reason="shipped weights not built yet (python -m abdoseg export)")
@pytest.mark.parametrize("variant", ["reoriented", "upper60"])
def test_shipped_weights_hold_when_restored_or_cropped(variant):
    """Within 0.02 DSC of the as-stored scan when re-stored in another orientation or cut to the upper 60 %."""
    from abdoseg.training.reframe import reframe

    predictor = Predictor.load(FP32_CARD, runtime="onnxruntime", threads=2)
    image, truth = sitk.ReadImage(str(real_image("abdpelvis3mm"))), sitk.ReadImage(str(real_label("abdpelvis3mm")))
    other, other_truth = reframe(image, variant, is_label=False), reframe(truth, variant, is_label=True)
    base = predictor.segment_image(image)
    pred = predictor.segment_image(other)
    base_truth, truth_arr = sitk.GetArrayFromImage(truth), sitk.GetArrayFromImage(other_truth)
    for label in (1, 2, 3):
        reference = _dice(base == label, base_truth == label)
        assert abs(_dice(pred == label, truth_arr == label) - reference) <= 0.02, (variant, label)


def test_cli_reports_a_bad_run_folder_in_one_line(tmp_path, capsys):
    from abdoseg.training.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path), "--out", str(tmp_path / "w")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config.json: missing" in err
