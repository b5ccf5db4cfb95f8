"""INT8 (abdoseg.training.quantize): NNCF quantizes the network only, the gate names each breach, the shipped INT8 card
keeps its gate on the real scans."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from abdoseg.inference.card import DEFAULT_CARD, NAMED_CARDS, card_path, load_card
from abdoseg.training.quantize import (
    MAX_DSC_CHANGE,
    MIN_AGREEMENT,
    QuantizeError,
    _gate_failures,
    gate,
    quantize_card,
    quantized_composed,
)
from tests.helpers import DATA


def _classes(model: onnx.ModelProto, ct: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"ct": ct})[0]


def test_nncf_quantizes_the_network_and_leaves_preprocessing_and_argmax_in_fp32(toy_card_path):
    card, path = load_card(toy_card_path)
    composed = onnx.load(str(path))
    rng = np.random.default_rng(0)
    images = [{"image": rng.random((1, 2, *card.geometry.shape), dtype=np.float32)} for _ in range(4)]
    quantized = quantized_composed(composed, card, images)
    ops = [n.op_type for n in quantized.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert not any(n.op_type == "QuantizeLinear" for n in quantized.graph.node if n.name.startswith(("pre/", "post/")))
    ct = rng.integers(-1000, 1000, (30, 60, 50)).astype(np.int16)
    assert np.mean(_classes(quantized, ct) == _classes(composed, ct)) > 0.95


def test_the_gate_names_every_breach():
    ok = {"a": {"agreement": MIN_AGREEMENT + 1e-4, "dsc_change": {"liver": MAX_DSC_CHANGE}}}
    assert _gate_failures(ok) == []
    bad = {"a": {"agreement": 0.99, "dsc_change": {"liver": 0.0, "spleen": -0.02}},
           "b": {"agreement": 1.0, "dsc_change": {"kidneys": 0.006}}}
    failures = _gate_failures(bad)
    assert len(failures) == 3 and any("spleen" in f for f in failures) and any("b: kidneys" in f for f in failures)


def test_an_int8_card_is_not_quantized_again(tmp_path):
    with pytest.raises(QuantizeError, match="fp32"):
        quantize_card(NAMED_CARDS["flare21"], DATA / "flare21", tmp_path, "again")


@pytest.mark.slow
def test_the_shipped_int8_card_holds_its_gate_on_the_real_scans():
    int8 = NAMED_CARDS["flare21"]
    card, _ = load_card(int8)
    product, _ = load_card(card_path(DEFAULT_CARD))  # the product's card runs this gated network first
    assert (product.model_file, product.sha256) == (card.model_file, card.sha256)
    assert card.precision == "int8" and card.slab_tail is None  # the network runs whole (small INT8 activations)
    recorded = json.loads(int8.read_text())["provenance"]["quantization"]["gate"]["measured"]
    measured = gate(card_path("flare21-fp32"), int8, DATA / "flare21")
    assert _gate_failures(measured) == [] and set(measured) == set(recorded)
    for scan, figures in measured.items():  # the card's record is what this CPU measures again
        assert abs(figures["agreement"] - recorded[scan]["agreement"]) < 5e-4
