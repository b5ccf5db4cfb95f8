"""The locate stage's pieces: coarse grid, probabilities -> z-range, the canvas window, the card section, and the
pipeline with a toy locator (a scan longer than the canvas is segmented only around what the locator found)."""
import dataclasses
import json

import numpy as np
import pytest

from abdoseg.inference.card import CardError, Geometry, LocatorSpec, ModelCard, load_card
from abdoseg.inference.locate import ZRange, coarse_slices, locator_input, region_from_probabilities, segment_window

SPEC = LocatorSpec(model_file="loc.onnx", sha256=None, spacing=(8.0, 8.0, 8.0), shape_yx=(16, 16), margin_mm=16.0)


def test_coarse_slices_cover_the_scan_evenly():
    z = coarse_slices(800, 1.5, 8.0)  # 1,200 mm -> 150 coarse slices
    assert len(z) == 150 and z[0] >= 0 and z[-1] <= 799
    assert np.all(np.diff(z) > 0)
    assert coarse_slices(1, 3.0, 8.0).tolist() == [0]  # a one-slice scan still has one coarse slice


def test_locator_input_samples_a_centred_canvas_with_pad_outside():
    ct = np.full((40, 20, 30), 100, np.int16)
    image = locator_input(ct, (4.0, 4.0, 4.0), SPEC)  # 16x16 at 8 mm = 128 mm canvas; scan 80 x 120 mm
    assert image.shape == (1, 2, 20, 16, 16) and image.dtype == np.float32
    wide = image[0, 0]  # window level 0, width 2000: 100 HU -> 0.55, air (pad) -> 0
    assert np.isclose(wide[:, 8, 8], 0.55).all()
    assert (wide[:, 0, 8] == 0.0).all()  # y: 80 mm of scan, the canvas's edge pixel is off it (pad)
    assert np.isclose(wide[:, 8, 0], 0.55).all()  # x: 120 mm wide, the canvas's 128 mm edge pixel is inside


def test_region_takes_the_strongest_run_and_adds_the_margin():
    prob = np.zeros(100)
    prob[10:13] = 0.6   # a weak short run
    prob[60:80] = 0.95  # the abdomen
    prob[70] = 0.3      # a one-slice gap inside it is bridged
    region = region_from_probabilities(prob, n_z=800, spacing_z=1.5, spec=SPEC)  # 8 coarse slices a coarse slice
    assert region.start == int((60 * 12 - 16) / 1.5) and region.stop == int(np.ceil((80 * 12 + 16) / 1.5))
    assert region.mm == (round(region.start * 1.5, 1), round(region.stop * 1.5, 1))


def test_region_is_empty_when_nothing_passes_and_clamped_at_the_ends():
    assert region_from_probabilities(np.full(50, 0.2), 400, 3.0, SPEC).empty
    edge = region_from_probabilities(np.r_[np.ones(5), np.zeros(45)], 400, 3.0, SPEC)
    assert edge.start == 0 and edge.stop > 0


@pytest.mark.parametrize("region, n_z, length_mm, expected", [
    (ZRange(500, 600, 1.5), 800, 384, (422, 678)),   # centred on the region, 256 slices
    (ZRange(700, 800, 1.5), 800, 384, (544, 800)),   # shifted to stay inside the scan
    (ZRange(0, 50, 1.5), 800, 384, (0, 256)),
    (ZRange(100, 500, 1.5), 800, 384, (100, 500)),   # a region longer than the canvas is kept whole
    (ZRange(10, 20, 3.0), 30, 384, (0, 30)),         # never longer than the scan
    (ZRange(300, 400, 1.5), 800, 0, (300, 400)),     # resize mode: the region itself
])
def test_segment_window(region, n_z, length_mm, expected):
    window = segment_window(region, n_z, length_mm)
    assert (window.start, window.stop) == expected


def _card(**kw):
    base = dict(name="t", model_file="m.onnx", sha256=None, graph="composed",
                geometry=Geometry("spacing", (96, 192, 192), (4.0, 2.6, 2.6)), locator=SPEC)
    return ModelCard(**{**base, **kw})


def test_card_locator_section_round_trips_and_resolves_its_file(tmp_path):
    card = _card()
    card.save(tmp_path / "c.json")
    loaded, _ = load_card(tmp_path / "c.json")
    assert loaded.locator.model_file == str(tmp_path / "loc.onnx")
    assert dataclasses.replace(loaded, locator=dataclasses.replace(loaded.locator, model_file="loc.onnx")) == card
    assert card.locate_above_mm == 384.0 and card.segment_window_mm == 384.0
    assert _card(locator=None).locate_above_mm == float("inf")


def test_card_locator_section_is_validated(tmp_path):
    d = json.loads(_card().to_json())
    d["locator"]["threshold"] = 1.5
    (tmp_path / "c.json").write_text(json.dumps(d))
    with pytest.raises(CardError, match="threshold"):
        load_card(tmp_path / "c.json")


def test_cobra_preset_borrows_the_shipped_locator_with_its_own_window():
    from abdoseg.inference.card import COBRA_LOCATE_ABOVE_MM, COBRA_WINDOW_MM, card_path

    card, _ = load_card("cobra", model_path="x/peer.onnx")
    shipped, _ = load_card(card_path("flare21-fp32"))
    if shipped.locator is None:
        pytest.skip("the shipped card has no locator")
    assert card.locator.model_file == shipped.locator.model_file and card.locator.sha256 == shipped.locator.sha256
    assert card.locate_above_mm == COBRA_LOCATE_ABOVE_MM and card.segment_window_mm == COBRA_WINDOW_MM


# --- the pipeline with a toy locator: probability = sigmoid(40 * (mean soft-tissue window of a slice - 0.6)) ---

def _toy_locator():
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Slice", ["image", "s0", "s1", "ax"], ["soft"]),           # channel 1: [1,1,Z,Y,X]
        helper.make_node("ReduceMean", ["soft"], ["m"], axes=[0, 1, 3, 4], keepdims=0),  # [Z]
        helper.make_node("Sub", ["m", "c"], ["d"]),
        helper.make_node("Mul", ["d", "k"], ["e"]),
        helper.make_node("Sigmoid", ["e"], ["probability"]),
    ]
    inits = [helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("s0", 1), ("s1", 2), ("ax", 1))]
    inits += [helper.make_tensor("c", TensorProto.FLOAT, [], [0.6]), helper.make_tensor("k", TensorProto.FLOAT, [], [40.0])]
    graph = helper.make_graph(nodes, "toy_locator",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 2, "Z", 16, 16])],
                              [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["Z"])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def located_card(tmp_path_factory):
    """A toy composed model on a spacing canvas (24 x 8 mm = 192 mm in z) with the toy locator."""
    import onnx

    from abdoseg.inference.card import sha256_of
    from abdoseg.inference.graph.preprocess_graph import compose_with_network
    from tests.helpers.synthetic import toy_network

    folder = tmp_path_factory.mktemp("located")
    geometry = Geometry("spacing", (24, 48, 48), (8.0, 4.0, 4.0))
    net_card = ModelCard(name="toy", model_file="toy.onnx", sha256=None, graph="network", geometry=geometry)
    onnx.save(compose_with_network(toy_network(), net_card), folder / "toy.onnx")
    onnx.save(_toy_locator(), folder / "loc.onnx")
    locator = dataclasses.replace(SPEC, sha256=sha256_of(folder / "loc.onnx"), margin_mm=8.0)
    card = ModelCard(name="toy", model_file="toy.onnx", sha256=sha256_of(folder / "toy.onnx"), graph="composed",
                     geometry=geometry, locator=locator)
    card.save(folder / "toy.json")
    return folder / "toy.json"


def _long_ct(n_z=300, bright=range(200, 240)):
    """A 600 mm scan (2 mm slices) of a water cylinder; the `bright` slices hold a 250 HU block (the 'organs')."""
    ct = np.full((n_z, 40, 40), -1000, np.int16)
    yy, xx = np.mgrid[:40, :40]
    ct[:, (yy - 20) ** 2 + (xx - 20) ** 2 < 18 ** 2] = 0
    ct[bright.start:bright.stop, 8:32, 8:32] = 250
    return ct, (2.0, 4.0, 4.0)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_long_scan_is_segmented_on_a_canvas_placed_over_the_located_organs(located_card, runtime):
    from abdoseg.inference.pipeline import Predictor, StageClock

    predictor = Predictor.load(located_card, runtime=runtime, threads=1)
    ct, spacing = _long_ct()
    clock = StageClock()
    labels = predictor.segment(ct, spacing, clock)
    organs = clock.details["locate"]["organs"]["slices"]
    window = clock.details["locate"]["window"]["slices"]
    assert organs[0] <= 200 and organs[1] >= 240 and organs[1] - organs[0] <= 40 + 2 * 8 + 8  # margin 8 mm = 4 slices
    assert window[1] - window[0] == 96  # 192 mm of 2 mm slices, centred on the organs
    assert abs((window[0] + window[1]) / 2 - (organs[0] + organs[1]) / 2) <= 1
    assert not labels[:window[0]].any() and not labels[window[1]:].any()  # outside the window: background
    expected = predictor.segment(np.ascontiguousarray(ct[window[0]:window[1]]), spacing)
    np.testing.assert_array_equal(labels[window[0]:window[1]], expected)  # inside: the canvas on those slices
    assert "locate" in clock.seconds


def test_long_scan_without_organs_is_empty_and_says_so(located_card):
    from abdoseg.inference.pipeline import Predictor, StageClock

    predictor = Predictor.load(located_card, runtime="onnxruntime", threads=1)
    ct, spacing = _long_ct(bright=range(0, 0))
    clock = StageClock()
    labels = predictor.segment(ct, spacing, clock)
    assert not labels.any() and clock.organs_found == []
    assert clock.details["locate"]["organs"]["slices"][0] >= clock.details["locate"]["organs"]["slices"][1]
    assert "graph" not in clock.seconds  # nothing located: no forward at all


def test_scan_no_longer_than_the_canvas_is_not_located(located_card):
    from abdoseg.inference.pipeline import Predictor, StageClock

    predictor = Predictor.load(located_card, runtime="onnxruntime", threads=1)
    ct, spacing = _long_ct(n_z=96, bright=range(10, 30))  # exactly 192 mm
    clock = StageClock()
    predictor.segment(ct, spacing, clock)
    assert "locate" not in clock.details and "locate" not in clock.seconds
    assert predictor._locator is None  # never even opened
    assert predictor.graph_shape(ct.shape, spacing) == ct.shape
    assert predictor.graph_shape((300, 40, 40), spacing) == (96, 40, 40)
