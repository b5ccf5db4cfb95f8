"""The locator network: augmented examples, a short training run, ONNX export in both runtimes, the card section."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from abdoseg.inference.card import Geometry, LocatorSpec, ModelCard, load_card, sha256_of
from abdoseg.training.locator import export_locator, locator_onnx, random_example, train_locator

SPEC = LocatorSpec(model_file="loc.onnx", sha256=None, shape_yx=(32, 32), spacing=(8.0, 12.0, 12.0))


def _scan(n=120, organs=range(80, 110)):
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 20, (n, 40, 40)).astype(np.int16)
    labels = np.zeros((n, 40, 40), np.uint8)
    hu[organs.start:organs.stop, 10:30, 10:30] += 150
    labels[organs.start:organs.stop, 10:30, 10:30] = 1
    return hu, labels, (3.0, 6.0, 6.0)


def test_random_examples_match_their_targets():
    rng = np.random.default_rng(1)
    hu, labels, spacing = _scan()
    for _ in range(20):
        image, target = random_example(hu, labels, spacing, SPEC, rng, max_slices=48)
        assert image.shape[:2] == (1, 2) and image.shape[3:] == SPEC.shape_yx
        assert image.shape[2] == target.shape[0] <= 48
        assert set(np.unique(target)) <= {0.0, 1.0}


@pytest.mark.slow
def test_a_short_run_learns_and_exports_to_both_runtimes(tmp_path):
    torch.set_num_threads(1)
    hu, labels, spacing = _scan()
    net, losses = train_locator([(hu, labels, spacing)], SPEC, steps=120, seed=0, width=8)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])  # it learns
    image = np.random.default_rng(2).random((1, 2, 37, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = torch.sigmoid(net(torch.from_numpy(image))).numpy()
    onnx_bytes = locator_onnx(net, SPEC)
    import onnxruntime as ort
    import openvino as ov

    got_ort = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run(None, {"image": image})[0]
    core = ov.Core()
    compiled = core.compile_model(core.read_model(onnx_bytes, b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got_ov = next(iter(compiled.create_infer_request().infer({"image": image}).values()))
    np.testing.assert_allclose(got_ort, expected, atol=1e-5)
    np.testing.assert_allclose(got_ov, expected, atol=1e-4)

    card = ModelCard(name="t", model_file="m.onnx", sha256=None, graph="composed",
                     geometry=Geometry("spacing", (96, 192, 192), (4.0, 2.6, 2.6)))
    card.save(tmp_path / "t.json")
    path = export_locator(net, SPEC, tmp_path / "t.json", provenance={"steps": 60})
    loaded, _ = load_card(tmp_path / "t.json")
    assert loaded.locator.sha256 == sha256_of(path) and loaded.locator.provenance == {"steps": 60}
    assert dataclasses.replace(loaded.locator, model_file="loc.onnx", sha256=None, provenance={}) == SPEC


def test_shipped_card_has_a_locator_whose_file_matches():
    from abdoseg.inference.card import card_path

    card, _ = load_card(card_path("flare21-fp32"))
    assert card.locator is not None, "the shipped card must describe its locate stage"
    assert sha256_of(card.locator.model_file) == card.locator.sha256
    recipe = json.loads(card_path("flare21-fp32").read_text())["locator"]["provenance"]["recipe"]
    assert recipe.startswith("python -m training train-locator")  # the command as recorded when it was trained


def test_a_new_locator_never_goes_to_a_file_a_card_of_other_organs_uses():
    from abdoseg.inference.card import WEIGHTS_DIR
    from abdoseg.training.locator import locator_file

    for name, expected in (("abdoseg_flare22", "abdoseg_flare22_locator.onnx"),  # shares the FLARE21 cards' file
                           ("abdoseg_coarse", "abdoseg_locator.onnx")):  # the INT8 card shares it: same organs
        card, _ = load_card(WEIGHTS_DIR / f"{name}.json")
        assert locator_file(card) == expected


@pytest.mark.slow
@pytest.mark.parametrize("section", ["none", "shared"])
def test_train_locator_reads_the_cards_label_set_and_writes_its_own_file(tmp_path, section):
    """A FLARE22 card's locator trains on FLARE22 label maps (ids up to 13) and is written beside the card as
    <card name>_locator.onnx, whether the card had no locator or shares the FLARE21 cards': never over theirs."""
    import SimpleITK as sitk

    from abdoseg.inference.card import WEIGHTS_DIR
    from abdoseg.training.locator import run

    hu, labels, _ = _scan(n=60, organs=range(30, 50))
    labels[40:50] *= 11  # the stomach, a FLARE22-only label
    for folder, array, name in (("imagesTr", hu, "case_0000"), ("labelsTr", labels, "case")):
        (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((6.0, 6.0, 3.0))
        sitk.WriteImage(image, str(tmp_path / "data" / folder / f"{name}.nii.gz"))
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("abdoseg_flare22", "abdoseg_coarse"):
        card, _ = load_card(WEIGHTS_DIR / f"{name}.json")
        locator = None if section == "none" and name == "abdoseg_flare22" else card.locator
        dataclasses.replace(card, locator=locator and dataclasses.replace(locator, model_file="abdoseg_locator.onnx")
                            ).save(weights / f"{name}.json")
    (weights / "abdoseg_locator.onnx").write_bytes(b"the FLARE21 cards' locator")
    torch.set_num_threads(1)
    path = run(tmp_path / "data", weights / "abdoseg_flare22.json", steps=2, seed=0, threads=1, recipe="test")
    assert path == weights / "abdoseg_flare22_locator.onnx"
    assert (weights / "abdoseg_locator.onnx").read_bytes() == b"the FLARE21 cards' locator"
    loaded, _ = load_card(weights / "abdoseg_flare22.json")
    assert loaded.labelset == "flare22" and loaded.locator.sha256 == sha256_of(path)
    assert loaded.locator.model_file == str(path)  # load_card resolves it beside the card
    assert loaded.locator.provenance["labelset"] == "flare22"
