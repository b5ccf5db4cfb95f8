"""abdoseg import-nnunet of the other configurations of the test models (tests/data/nnunet/): 2d, and the cascade
3d_lowres -> 3d_cascade_fullres, whose card records its previous stage."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("nnunetv2")

from abdoseg.importers.nnunet import ImportRefused, cached_import, import_model_folder
from tests.helpers.nnunet import NNUNET_DATA, model_folder


def _plans_config(folder, configuration):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    return PlansManager(json.loads((folder / "plans.json").read_text())).get_configuration(configuration).configuration


def _same_as_committed(card: dict, configuration: str) -> bool:
    """The fresh card equals tests/data/nnunet/cards/tiny_<configuration>.json but for what depends on the machine
    (parity figures, nnunetv2 version) and on where the cards lie (the previous stage's relative path)."""
    committed = json.loads((NNUNET_DATA / "cards" / f"tiny_{configuration}.json").read_text())
    fresh = json.loads(json.dumps(card))
    for c in (fresh, committed):
        for key in ("parity", "name", "onnx"):
            c.pop(key)
        c["source"].pop("nnunetv2_version")
        if c["previous_stage"]:
            c["previous_stage"].pop("card")
    return fresh == committed


@pytest.mark.slow
def test_configuration_comes_from_the_folder_name_2d(tmp_path):
    folder = model_folder("2d")
    card = json.loads(import_model_folder(folder, tmp_path / "flat").read_text())
    config = _plans_config(folder, "2d")
    assert card["configuration"] == "2d" and card["patch_size"] == config["patch_size"] and len(card["spacing"]) == 2
    import onnx

    dims = [d.dim_value or d.dim_param for d in onnx.load(tmp_path / card["onnx"]["0"]).graph.input[0].type
            .tensor_type.shape.dim]
    assert dims == ["N", 1, *config["patch_size"]]
    assert _same_as_committed(card, "2d")


@pytest.mark.slow
def test_cascade_needs_and_records_its_previous_stage(tmp_path):
    low = import_model_folder(model_folder("3d_lowres"), tmp_path / "low" / "lowres")
    with pytest.raises(ImportRefused, match="give --previous-stage"):
        import_model_folder(model_folder("3d_cascade_fullres"), tmp_path / "cascade")
    with pytest.raises(ImportRefused, match="is a 3d_fullres card"):
        import_model_folder(model_folder("3d_cascade_fullres"), tmp_path / "cascade",
                            previous_stage=_fullres_card_file(tmp_path))
    card = json.loads(import_model_folder(model_folder("3d_cascade_fullres"), tmp_path / "cascade",
                                          previous_stage=low).read_text())
    assert card["previous_stage"] == {"configuration": "3d_lowres", "card": "low/lowres.json"}
    assert card["in_channels"] == 1 + 4  # the scan and the one-hot foreground of the low-resolution stage
    lowres = json.loads(low.read_text())
    assert lowres["spacing"] == [2 * s for s in card["spacing"]]
    assert _same_as_committed(card, "3d_cascade_fullres") and _same_as_committed(lowres, "3d_lowres")


def _fullres_card_file(tmp_path):
    path = tmp_path / "fullres.json"
    path.write_text(json.dumps({"configuration": "3d_fullres"}))
    return path


@pytest.mark.slow
def test_cached_import_of_a_cascade_brings_its_lowres_stage(tmp_path):
    card = cached_import(model_folder("3d_cascade_fullres"), tmp_path)
    previous = json.loads(card.read_text())["previous_stage"]
    assert json.loads((card.parent / previous["card"]).read_text())["configuration"] == "3d_lowres"
