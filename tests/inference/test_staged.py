"""The network in parts (abdoseg.inference.graph.staged): the slab plan, exact labels against the whole graph, the
cut's check."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import SimpleITK as sitk

from abdoseg.inference.card import SlabTail, card_path, load_card
from abdoseg.inference.graph.runtime import open_session
from abdoseg.inference.graph.staged import InPlaneChunks, StagedSession, network_parts, slab_agreement, slab_plan
from abdoseg.inference.grid.scan import Grid, canonical_hu
from abdoseg.inference.pipeline import Predictor
from tests.helpers import ROOT, real_image

INT8_CARD, FP32_CARD = card_path("flare21"), card_path("flare21-fp32")


@pytest.mark.parametrize("depth", [1, 5, 13, 14, 15, 24, 48, 49, 100])
@pytest.mark.parametrize("slab,halo", [(12, 1), (4, 2), (1, 0), (7, 3)])
def test_slab_plan_keeps_every_slice_once_with_its_halo(depth, slab, halo):
    runs = slab_plan(depth, SlabTail(cut="t", halo=halo, slab=slab))
    kept = [z for _, _, a, b in runs for z in range(a, b)]
    assert kept == list(range(depth))
    assert len({stop - start for start, stop, _, _ in runs}) == 1  # one compiled shape
    for start, stop, keep, keep_stop in runs:
        assert 0 <= start <= keep and keep_stop <= stop <= depth
        assert keep - start >= halo or start == 0
        assert stop - keep_stop >= halo or stop == depth


@pytest.fixture(scope="module")
def shipped():
    card, path = load_card(FP32_CARD)
    return card, onnx.load(str(path))


@pytest.mark.slow
def test_the_shipped_cut_gives_the_whole_networks_classes_and_needs_its_halo(shipped):
    card, composed = shipped
    assert card.slab_tail is not None
    assert slab_agreement(composed, card) == 1.0
    no_halo = dataclasses.replace(card, slab_tail=dataclasses.replace(card.slab_tail, halo=0, slab=8))
    assert slab_agreement(composed, no_halo) < 0.999  # the check can fail: slab edges without context differ


def test_an_unknown_cut_is_refused(shipped):
    card, composed = shipped
    with pytest.raises(Exception, match="nowhere"):
        network_parts(composed, SlabTail(cut="nowhere", halo=1, slab=12), (1, 2, *card.geometry.shape), card.num_classes)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_the_parts_give_the_composed_graphs_classes_on_a_real_scan(runtime, tmp_path):
    """In z-slabs (fp32 card) or whole with ArgMax as comparisons (the card without its slab_tail): the classes
    of the composed graph as the model file holds it."""
    whole_card = json.loads(FP32_CARD.read_text())
    whole_card.pop("slab_tail")
    whole_card["model_file"] = str(FP32_CARD.parent / whole_card["model_file"])
    (tmp_path / "whole.json").write_text(json.dumps(whole_card))
    slabs = Predictor.load(FP32_CARD, runtime=runtime, threads=2).session
    whole = Predictor.load(tmp_path / "whole.json", runtime=runtime, threads=2).session
    assert isinstance(slabs, InPlaneChunks) and isinstance(whole, InPlaneChunks)
    assert isinstance(slabs.rest, StagedSession) and not isinstance(whole.rest, StagedSession)
    composed = open_session(FP32_CARD.parent / whole_card["model_file"], runtime, 2)
    image = sitk.ReadImage(str(real_image("abdpelvis3mm")))
    ct, spacing, _ = canonical_hu(sitk.GetArrayViewFromImage(image), Grid.of(image), "RAS")
    feeds = {"ct": ct, "spacing": np.asarray(spacing, np.float32)}
    expected = composed.run(feeds)
    assert expected.any() and np.array_equal(slabs.run(feeds), expected) and np.array_equal(whole.run(feeds), expected)


@pytest.mark.slow
@pytest.mark.parametrize("card,parts", [(INT8_CARD, ["graph", "inplane"]),
                                        (FP32_CARD, ["inplane", "prep", "tail", "trunk"])])
def test_with_a_cache_folder_the_parts_are_files_and_a_cold_run_never_imports_onnx(card, parts, tmp_path):
    cache = tmp_path / "cache"

    def run(shape: tuple[int, int, int]) -> str:
        code = ("import sys, numpy as np; from abdoseg.inference.pipeline import Predictor; "
                f"p = Predictor.load({str(card)!r}, threads=2, cache_dir={str(cache)!r}); "
                f"p.segment(np.full({shape}, -1000, np.int16), (5.0, 6.0, 6.0)); "
                "print('onnx' in sys.modules, 'openvino.tools.ovc' in sys.modules)")
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()

    assert run((40, 64, 64)) == "True False"  # first: the parts are cut out of the model file (onnx) and written
    assert sorted(p.stem for p in cache.glob("parts-*/*.onnx")) == parts  # the INT8 card: in-plane, then the rest whole
    blobs = sorted(cache.glob("*.blob"))
    assert len(blobs) == len(parts)  # OpenVINO's compiled parts, the preprocessing compiled for any scan shape
    assert run((33, 70, 58)) == "False False"  # then: read from the cache, no onnx import on the cold path
    assert sorted(cache.glob("*.blob")) == blobs  # another scan shape compiled nothing new


def test_a_cache_folder_that_cannot_be_made_is_skipped(tmp_path):
    (tmp_path / "a_file").write_text("")
    predictor = Predictor.load(threads=2, cache_dir=tmp_path / "a_file" / "cache")
    labels = predictor.segment(np.full((40, 64, 64), -1000, np.int16), (5.0, 6.0, 6.0))
    assert labels.shape == (40, 64, 64) and not (tmp_path / "a_file" / "cache").exists()


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_argmax_as_comparisons_gives_argmax_ties_included(runtime):
    from onnx import TensorProto, helper

    from abdoseg.inference.graph.runtime import open_session
    from abdoseg.inference.graph.staged import argmax_as_comparisons

    k = 6
    nodes = [helper.make_node("ArgMax", ["scores"], ["index"], axis=1, keepdims=0),
             helper.make_node("Cast", ["index"], ["classes"], to=TensorProto.UINT8)]
    graph = helper.make_graph(nodes, "argmax", [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, k, 4, 5, 6])],
                              [helper.make_tensor_value_info("classes", TensorProto.UINT8, [4, 5, 6])])
    graph.value_info.append(helper.make_tensor_value_info("index", TensorProto.INT64, [1, 4, 5, 6]))  # as shape
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])  # inference records
    argmax_as_comparisons(model, k)
    onnx.checker.check_model(model)
    assert "ArgMax" not in {n.op_type for n in model.graph.node}
    session = open_session(model.SerializeToString(), runtime, 1)
    for seed in range(3):
        scores = np.random.default_rng(seed).integers(-2, 3, (1, k, 4, 5, 6)).astype(np.float32)  # many ties
        assert np.array_equal(session.run({"scores": scores}).reshape(4, 5, 6), np.argmax(scores[0], axis=0))


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
@pytest.mark.parametrize("depth", [3, 8, 13, 16])
def test_the_inplane_part_in_chunks_then_the_rest_is_the_preprocessing_in_one_graph(runtime, depth):
    """Chunks of INPLANE_CHUNK slices (fewer, one, or the last shifted back), then z and the windows: the image the
    one-graph preprocessing gives, pad included (the scan is narrower than the canvas on every axis)."""
    from abdoseg.inference.graph.preprocess_graph import (
        build_from_plane_graph,
        build_inplane_graph,
        build_preprocess_graph,
    )

    card, _ = load_card(INT8_CARD)
    ct = np.random.default_rng(depth).integers(-1024, 1500, (depth, 70, 58)).astype(np.int16)
    feeds = {"ct": ct, "spacing": np.asarray((5.0, 6.0, 6.0), np.float32)}
    one, inplane, rest = (open_session(g(x).SerializeToString(), runtime, 2) for g, x in (
        (build_preprocess_graph, card), (build_inplane_graph, card.geometry), (build_from_plane_graph, card)))
    expected = one.run(feeds)
    assert (expected == 0).mean() > 0.5 and ((expected > 0) & (expected < 1)).any()  # mostly pad, some scan
    image = InPlaneChunks(inplane, rest, card.geometry.shape[1:]).run(feeds)
    np.testing.assert_allclose(image, expected, rtol=0, atol=1e-5)  # window units: 1e-5 of 100-400 HU
