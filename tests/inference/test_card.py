"""Model card: round trip, validation messages, checksum."""
import json

import pytest

from abdoseg.inference.card import CardError, Geometry, ModelCard, load_card, verify_checksum


def _card(**kw):
    base = dict(name="t", model_file="m.onnx", sha256=None, graph="composed", geometry=Geometry("resize", (8, 8, 8)))
    return ModelCard(**{**base, **kw})


def test_json_round_trip(tmp_path):
    card = _card(geometry=Geometry("spacing", (8, 16, 16), (4.0, 2.0, 2.0)), provenance={"seed": 0})
    card.save(tmp_path / "c.json")
    loaded, model = load_card(tmp_path / "c.json")
    assert loaded == card
    assert model == tmp_path / "m.onnx"


@pytest.mark.parametrize("kw, match", [
    (dict(graph="weird"), "graph must be"),
    (dict(orientation="XYZ"), "orientation code"),
    (dict(geometry=None), None),
])
def test_invalid_fields_name_the_value(kw, match):
    if kw.get("geometry", 1) is None:
        with pytest.raises(CardError, match="geometry mode 'spacing' needs"):
            Geometry("spacing", (8, 8, 8))
        return
    with pytest.raises(CardError, match=match):
        _card(**kw)


def test_unknown_field_lists_valid_ones(tmp_path):
    d = json.loads(_card().to_json())
    d["windos"] = []
    (tmp_path / "c.json").write_text(json.dumps(d))
    with pytest.raises(CardError, match=r"unknown card field\(s\) \['windos'\]; valid:"):
        load_card(tmp_path / "c.json")


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"not the file the card describes")
    card = _card(sha256="0" * 64)
    with pytest.raises(CardError, match="does not match the card"):
        verify_checksum(card, tmp_path / "m.onnx")
    with pytest.raises(CardError, match="model file not found"):
        verify_checksum(card, tmp_path / "missing.onnx")


def test_preset_needs_a_model_file():
    with pytest.raises(CardError, match="needs an explicit --model"):
        load_card("cobra")
    card, path = load_card("cobra", model_path="x/peer.onnx")
    assert card.graph == "network" and card.geometry.shape == (96, 192, 192) and path.name == "peer.onnx"
