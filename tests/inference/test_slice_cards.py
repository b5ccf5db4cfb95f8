""""Slices" cards (2D networks) run by the same pipeline under the same rules as the 3D path.

The 3D path's orientation, runtime, bad-input and predict.sh tests run with the toy 2D card too (they take the
`any_toy_card_path` fixture: tests/inference/test_cli.py, test_pipeline.py); these check what is particular to
slices: in-plane-only resampling, batching, the z-score intensity.
"""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.card import CardError, Geometry, ModelCard, load_card
from abdoseg.inference.graph.runtime import open_session
from abdoseg.inference.graph.slice_graph import SliceBatches, build_slice_preprocess_graph, build_slice_resample_graph
from abdoseg.inference.grid.geometry import AxisMap, axis_maps
from abdoseg.inference.pipeline import Predictor
from tests.helpers.slice_toy import SLICE_HW, write_toy_slice_card
from tests.helpers.synthetic import synthetic_ct


@pytest.fixture(scope="module")
def zscore_card_path(tmp_path_factory):
    return write_toy_slice_card(tmp_path_factory.mktemp("toy2d_z"), zscore=True, batch=4)


def _ort(model):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_inplane_resample_keeps_every_slice_and_matches_the_axis_maps():
    """Each slice alone, through AxisMap.weights (numpy): the graph's y/x MatMuls, z untouched."""
    rng = np.random.default_rng(0)
    ct = rng.integers(-1000, 1000, (5, 70, 53)).astype(np.int16)
    geometry = Geometry("slices", (2, *SLICE_HW))
    hu = _ort(build_slice_resample_graph(geometry)).run(["hu"], {"ct": ct})[0]
    mz, my, mx = axis_maps(ct.shape, (2.5, 0.8, 0.8), geometry)
    assert mz == AxisMap(5, 5, 1.0) and (my.n_out, mx.n_out) == SLICE_HW
    expected = np.einsum("yh,zhw,xw->zyx", my.weights(), ct.astype(np.float64), mx.weights())
    assert hu.shape == (5, *SLICE_HW)
    np.testing.assert_allclose(hu, expected, atol=0.05)


def test_batches_of_slices_give_the_whole_volume_at_once(slice_card_path):
    """SliceBatches (batch 3, last batch padded) equals the graph run on all slices together, and the
    OpenVINO session compiles one batch shape for the whole scan."""
    card, model_path = load_card(slice_card_path)
    ct = sitk.GetArrayFromImage(synthetic_ct((11, 50, 45), (2.0, 0.8, 0.8)))
    whole = open_session(model_path, "onnxruntime", 1).run({"ct": ct})
    assert whole.shape == (11, *SLICE_HW) and len(np.unique(whole)) > 2
    for runtime in ("onnxruntime", "openvino"):
        batches = SliceBatches(open_session(model_path, runtime, 1), card.geometry.shape[0])
        batches.prepare(ct.shape)
        assert (batches.run({"ct": ct}) == whole).mean() >= 0.9999
    with pytest.raises(ValueError, match=">= 1"):
        SliceBatches(open_session(model_path, "onnxruntime", 1), 0)


def test_zscore_card_normalises_with_its_stored_statistics(zscore_card_path):
    card, _ = load_card(zscore_card_path)
    assert card.zscore is not None and card.zscore.mean == 40.0
    hu = np.array([[[-1000, 40, 130, 2000]]], np.int16).repeat(SLICE_HW[0], 1).repeat(SLICE_HW[1] // 4, 2)
    x = _ort(build_slice_preprocess_graph(card)).run(["slices"], {"ct": hu})[0]
    w = card.windows[0]
    assert x.shape == (1, 1, *SLICE_HW)
    np.testing.assert_allclose(x[0, 0, 0, ::9], (np.clip([-1000, 40, 130, 2000], w.low, w.high) - 40.0) / 90.0, atol=1e-4)
    labels = Predictor.load(zscore_card_path, runtime="onnxruntime").segment_image(synthetic_ct((9, 30, 31), (3, 1, 1)))
    assert labels.shape == (9, 30, 31) and len(np.unique(labels)) > 1


def test_slice_cards_are_validated(slice_card_path):
    card, _ = load_card(slice_card_path)
    with pytest.raises(CardError, match="composed graph"):
        ModelCard(**{**card.__dict__, "graph": "network"})
    with pytest.raises(CardError, match="exactly one window"):
        ModelCard.from_dict({**json.loads(card.to_json()), "zscore": {"mean": 0.0, "std": 1.0}})
    with pytest.raises(CardError, match="std must be > 0"):
        ModelCard.from_dict({**json.loads(card.to_json()), "windows": [{"level": 0, "width": 10}],
                             "zscore": {"mean": 0.0, "std": 0.0}})


class _Recorder:
    """A Session that records the shapes it gets and answers each slice with its first voxel (as classes)."""

    input_names, description = ("ct",), "recorder"

    def __init__(self):
        self.prepared, self.runs = [], []

    def prepare(self, shape):
        self.prepared.append(shape)

    def run(self, feeds):
        ct = feeds["ct"]
        self.runs.append(ct.shape)
        return np.broadcast_to(ct[:, :1, :1].astype(np.uint8), (len(ct), 2, 3)).copy()


def test_the_network_never_sees_more_than_the_cards_batch_and_slices_stay_in_order():
    inner = _Recorder()
    batches = SliceBatches(inner, 4)
    ct = np.broadcast_to(np.arange(10, dtype=np.int16)[:, None, None], (10, 8, 8))
    batches.prepare(ct.shape)
    out = batches.run({"ct": ct})
    assert inner.prepared == [(4, 8, 8)] and inner.runs == [(4, 8, 8)] * 3  # 10 slices: 4 + 4 + 2 padded to 4
    np.testing.assert_array_equal(out[:, 0, 0], np.arange(10))
    assert out.shape == (10, 2, 3)
    short = _Recorder()
    SliceBatches(short, 4).run({"ct": ct[:3]})
    assert short.runs == [(3, 8, 8)]  # a scan shorter than the batch is one run of its own length
