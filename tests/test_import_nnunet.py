"""abdoseg import-nnunet: real nnU-Net v2 model folders (tests/data/nnunet/, trained with nnU-Net's own tools) made
into cards whose fields are the plans' and dataset.json's values, and ONNX files that compute what nnU-Net's own
network (built by nnUNetPredictor from the same folder) computes."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("nnunetv2")
import torch

from abdoseg.importers.nnunet import ImportRefused, cached_import, import_model_folder
from abdoseg.importers.nnunet.cli import main as import_main
from tests.helpers.nnunet import NNUNET_DATA, model_folder, random_model_folder

FULLRES = model_folder("3d_fullres")


@pytest.fixture(scope="module")
def fullres_card(tmp_path_factory):
    out = tmp_path_factory.mktemp("cards") / "tiny_3d_fullres"
    return json.loads(import_model_folder(FULLRES, out).read_text()), out.parent


@pytest.mark.slow
def test_card_fields_are_the_plans_and_dataset_values(fullres_card):
    card, out = fullres_card
    plans = json.loads((FULLRES / "plans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    dataset = json.loads((FULLRES / "dataset.json").read_text())
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    assert card["format"] == "abdoseg-nnunet-card/1" and card["configuration"] == "3d_fullres"
    assert card["labels"] == {str(v): k for k, v in dataset["labels"].items()}
    assert card["labels"]["1"] == "liver" and card["n_classes"] == 5 and card["in_channels"] == 1
    assert card["spacing"] == config["spacing"] and card["patch_size"] == config["patch_size"]
    assert card["transpose_forward"] == plans["transpose_forward"]
    assert card["normalization"] == [{"scheme": "CTNormalization", "mean": props["mean"], "std": props["std"],
                                      "lower": props["percentile_00_5"], "upper": props["percentile_99_5"]}]
    assert card["resampling"]["data"] == {"fn": config["resampling_fn_data"],
                                          "kwargs": config["resampling_fn_data_kwargs"]}
    assert card["resampling"]["probabilities"]["kwargs"] == config["resampling_fn_probabilities_kwargs"]
    assert card["folds"] == [0, 1]  # every fold present, by default
    checkpoint = torch.load(FULLRES / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert card["mirror_axes"] == list(checkpoint["inference_allowed_mirroring_axes"])
    for fold in (0, 1):
        digest = hashlib.sha256((FULLRES / f"fold_{fold}" / "checkpoint_final.pth").read_bytes()).hexdigest()
        assert card["source"]["checkpoint_sha256"][str(fold)] == digest
        assert (out / card["onnx"][str(fold)]).is_file()
    assert card["source"]["trainer"] == "nnUNetTrainer" and card["source"]["plans_name"] == "nnUNetTinyPlans"
    assert card["previous_stage"] is None
    assert card["parity"]["max_abs_logit_diff"] <= card["parity"]["tolerance"]


@pytest.mark.slow
def test_onnx_computes_what_nnunets_own_network_computes(fullres_card):
    """nnUNetPredictor builds and loads the network itself (its trainer lookup, its weights): the ONNX agrees with it
    on a batch of two random patches (the batch axis is free)."""
    import onnxruntime as ort
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    card, out = fullres_card
    predictor = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=False)
    predictor.initialize_from_trained_model_folder(str(FULLRES), use_folds=(1,), checkpoint_name="checkpoint_final.pth")
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    patch = np.random.default_rng(3).standard_normal((2, 1, *card["patch_size"])).astype(np.float32)
    with torch.no_grad():
        expected = predictor.network.eval()(torch.from_numpy(patch)).numpy()
    got = ort.InferenceSession(str(out / card["onnx"]["1"])).run(["logits"], {"image": patch})[0]
    assert got.shape == (2, card["n_classes"], *card["patch_size"])
    assert np.max(np.abs(got - expected)) < 1e-3 * max(1.0, np.max(np.abs(expected)))
    assert np.mean(got.argmax(1) == expected.argmax(1)) > 0.999


@pytest.mark.slow
def test_the_committed_card_is_what_the_import_writes(fullres_card):
    """tests/data/nnunet/cards/ (the runtime's test cards) are current: the same card as a fresh import."""
    fresh, _ = fullres_card
    committed = json.loads((NNUNET_DATA / "cards" / "tiny_3d_fullres.json").read_text())
    for card in (fresh, committed):  # values of the machine that imported
        card.pop("parity")
        card["source"].pop("nnunetv2_version")
    assert committed == fresh


@pytest.mark.slow
def test_folds_option_imports_only_those(tmp_path):
    assert import_main([str(FULLRES), "--folds", "1", "--out", str(tmp_path / "one")]) == 0
    card = json.loads((tmp_path / "one.json").read_text())
    assert card["folds"] == [1] and list(card["onnx"]) == ["1"] and list(card["source"]["checkpoint_sha256"]) == ["1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.fold_1.onnx", "one.json"]


def _copy(folder, tmp_path, edit_dataset=None, edit_plans=None):
    dst = tmp_path / folder.name
    shutil.copytree(folder, dst)
    for name, edit in (("dataset.json", edit_dataset), ("plans.json", edit_plans)):
        if edit is not None:
            data = json.loads((dst / name).read_text())
            edit(data)
            (dst / name).write_text(json.dumps(data))
    return dst


def test_region_based_models_are_refused_in_one_line(tmp_path, capsys):
    def regions(d):
        d["labels"] = {"background": 0, "abdomen": [1, 2, 3, 4], "liver": 1}
        d["regions_class_order"] = [1, 2]

    folder = _copy(FULLRES, tmp_path, edit_dataset=regions)
    assert import_main([str(folder), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "region-based" in err and "dataset.json" in err
    assert not (tmp_path / "x.json").exists()


def test_non_ct_normalisation_is_refused_in_one_line(tmp_path, capsys):
    def zscore(p):
        p["configurations"]["3d_fullres"]["normalization_schemes"] = ["ZScoreNormalization"]

    folder = _copy(FULLRES, tmp_path, edit_plans=zscore)
    assert import_main([str(folder), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ZScoreNormalization" in err and "plans.json" in err


@pytest.mark.parametrize("problem, match", [
    ("name", "TRAINER__PLANS__CONFIGURATION"), ("fold", "no fold_7"), ("configuration", "no configuration"),
    ("weights", "do not fit the network"), ("checkpoint", "not a torch checkpoint")])
def test_broken_folders_are_refused_naming_the_file(tmp_path, problem, match):
    folder = _copy(FULLRES, tmp_path)
    folds = (7,) if problem == "fold" else None
    if problem == "name":
        folder = folder.rename(tmp_path / "not_an_nnunet_folder")
    elif problem == "configuration":
        folder = folder.rename(tmp_path / "nnUNetTrainer__nnUNetTinyPlans__3d_midres")
    elif problem == "weights":
        plans = json.loads((folder / "plans.json").read_text())
        plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] = [8, 16, 32, 64]
        (folder / "plans.json").write_text(json.dumps(plans))
    elif problem == "checkpoint":
        (folder / "fold_1" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")  # after fold 0's export
    with pytest.raises(ImportRefused, match=match) as e:
        import_model_folder(folder, tmp_path / "out" / "x", folds)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())  # nothing left behind


@pytest.mark.slow
def test_cached_import_is_keyed_by_the_checkpoints(tmp_path):
    folder = _copy(FULLRES, tmp_path)
    cache = tmp_path / "cache"
    card = cached_import(folder, cache)
    stamp = card.stat().st_mtime_ns
    assert cached_import(folder, cache) == card and card.stat().st_mtime_ns == stamp  # not imported again
    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    checkpoint["current_epoch"] += 1  # another training state: another key
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    again = cached_import(folder, cache)
    assert again != card and again.is_file() and card.is_file()
    assert sorted(p.name for p in card.parent.iterdir()) == ["model.fold_0.onnx", "model.fold_1.onnx", "model.json"]


@pytest.mark.slow
def test_a_full_size_plan_imports(tmp_path):
    """The planner's own 3d_fullres for the bundled scans (30.8 M parameters, patch 64x192x192), randomly
    initialised and saved as nnUNetTrainer saves it."""
    from tests.helpers.nnunet import DEFAULT_PLANS

    plans = json.loads(DEFAULT_PLANS.read_text())
    dataset = json.loads((FULLRES / "dataset.json").read_text())
    folder = random_model_folder(tmp_path, plans, "3d_fullres", dataset)
    weights = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    unique = {t.data_ptr(): t.numel() for t in weights["network_weights"].values()}  # decoder.encoder: the encoder
    assert 30e6 < sum(unique.values()) < 32e6
    card = json.loads(import_model_folder(folder, tmp_path / "full").read_text())
    assert card["patch_size"] == [64, 192, 192] and card["spacing"] == plans["configurations"]["3d_fullres"]["spacing"]
    assert card["parity"]["max_abs_logit_diff"] <= card["parity"]["tolerance"]
    assert (tmp_path / "full.fold_0.onnx").stat().st_size > 100e6
