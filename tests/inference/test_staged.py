"""The network in parts (inference.staged): the slab plan, exact labels against the whole graph, the cut's check."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import SimpleITK as sitk

from inference.card import SlabTail, load_card
from inference.pipeline import FP32_CARD, Predictor
from inference.staged import StagedSession, network_parts, slab_agreement, slab_plan
from tests.conftest import ROOT, real_image


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


def test_the_shipped_cut_gives_the_whole_networks_classes_and_needs_its_halo(shipped):
    card, composed = shipped
    assert card.slab_tail is not None
    assert slab_agreement(composed, card) == 1.0
    no_halo = dataclasses.replace(card, slab_tail=dataclasses.replace(card.slab_tail, halo=0, slab=8))
    assert slab_agreement(composed, no_halo) < 0.999  # the check can fail: slab edges without context differ


def test_an_unknown_cut_is_refused(shipped):
    card, composed = shipped
    with pytest.raises(Exception, match="nowhere"):
        network_parts(composed, "nowhere", (1, 2, *card.geometry.shape))


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_staged_labels_equal_the_composed_graphs_on_a_real_scan(runtime, tmp_path):
    whole_card = json.loads(FP32_CARD.read_text())
    whole_card.pop("slab_tail")
    whole_card["model_file"] = str(FP32_CARD.parent / whole_card["model_file"])
    (tmp_path / "whole.json").write_text(json.dumps(whole_card))
    staged = Predictor.load(FP32_CARD, runtime=runtime, threads=2)
    whole = Predictor.load(tmp_path / "whole.json", runtime=runtime, threads=2)
    assert isinstance(staged.session, StagedSession) and not isinstance(whole.session, StagedSession)
    image = sitk.ReadImage(str(real_image("abdpelvis3mm")))
    labels = staged.segment_image(image)
    assert np.array_equal(labels, whole.segment_image(image)) and labels.any()


def test_with_a_cache_folder_the_parts_are_files_and_a_cold_run_never_imports_onnx(tmp_path):
    cache = tmp_path / "cache"
    code = ("import sys, numpy as np; from inference.pipeline import Predictor; "
            f"p = Predictor.load(threads=2, cache_dir={str(cache)!r}); "
            "p.segment(np.full((40, 64, 64), -1000, np.int16), (5.0, 6.0, 6.0)); "
            "print('onnx' in sys.modules)")
    run = lambda: subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,  # noqa: E731
                                 check=True).stdout.strip()
    assert run() == "True"  # first: the parts are cut out of the model file (onnx) and written
    parts = list(cache.glob("parts-*/*.onnx"))
    assert sorted(p.name for p in parts) == ["prep.onnx", "tail.onnx", "trunk.onnx"]
    assert list(cache.glob("*.blob"))  # OpenVINO's compiled network parts
    assert run() == "False"  # then: read from the cache, no onnx import on the cold path


def test_a_cache_folder_that_cannot_be_made_is_skipped(tmp_path):
    (tmp_path / "a_file").write_text("")
    predictor = Predictor.load(threads=2, cache_dir=tmp_path / "a_file" / "cache")
    labels = predictor.segment(np.full((40, 64, 64), -1000, np.int16), (5.0, 6.0, 6.0))
    assert labels.shape == (40, 64, 64) and not (tmp_path / "a_file" / "cache").exists()
