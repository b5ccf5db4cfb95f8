"""The one resampling convention: numpy reference, in-graph twin (both runtimes), label maps."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abdoseg.inference.card import Geometry
from abdoseg.inference.grid.geometry import AxisMap, axis_maps, downsample_labels, upsample_labels


@given(n_in=st.integers(1, 300), n_out=st.integers(1, 200))
def test_resize_weights_are_normalised_and_centred(n_in, n_out):
    m = AxisMap(n_in, n_out, n_in / n_out)
    w = m.weights()
    assert w.shape == (n_out, n_in)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-9)
    # the weighted mean position of each row is the voxel centre where the border does not clip the filter:
    # exactly when enlarging (plain linear), within a tenth of a voxel when the sampled triangle is widened
    pos = w @ np.arange(n_in)
    c = m.centers()
    interior = (c - m.step - 1 >= 0) & (c + m.step + 1 <= n_in - 1)
    np.testing.assert_allclose(pos[interior], c[interior], atol=1e-9 if n_out >= n_in else 0.1)


def test_resize_centres_match_half_pixel_convention():
    m = AxisMap(134, 96, 134 / 96)
    np.testing.assert_allclose(m.centers(), (np.arange(96) + 0.5) * 134 / 96 - 0.5)


def test_spacing_mode_pads_outside_the_scan():
    m = AxisMap(20, 96, 4.0 / 2.0)  # 20 slices of 2 mm onto 96 slices of 4 mm: a 40 mm scan on a 384 mm canvas
    inside = m.inside()
    assert inside.sum() == 10
    assert np.all(m.weights()[~inside] == 0)
    assert np.all(m.nearest_output()[m.nearest_output() >= 0] < 96)


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(2, 40), st.integers(2, 40), st.integers(2, 40)),
       out=st.tuples(st.integers(2, 30), st.integers(2, 30), st.integers(2, 30)))
def test_label_down_and_up_sampling_round_trip_on_the_model_grid(shape, out):
    rng = np.random.default_rng(0)
    maps = axis_maps(shape, (1.0, 1.0, 1.0), Geometry("resize", out))
    low = rng.integers(0, 5, out).astype(np.uint8)
    full = upsample_labels(low, maps)
    assert full.shape == shape
    # every full-resolution voxel reads the model voxel whose cell contains it
    idx = np.ix_(*(m.nearest_output() for m in maps))
    np.testing.assert_array_equal(full, low[idx])
    # downsampling an upsampled map is the identity wherever the model voxel owns the sampled voxel
    back = downsample_labels(full, maps)
    owner = np.ix_(*((m.nearest_output()[m.nearest_input()] == np.arange(m.n_out)) for m in maps))
    np.testing.assert_array_equal(back[owner], low[owner])


def _resample_numpy(ct, maps, pad):
    out = np.einsum("ai,ijk->ajk", maps[0].weights(), ct)
    out = np.einsum("bj,ajk->abk", maps[1].weights(), out)
    out = np.einsum("ck,abk->abc", maps[2].weights(), out)
    inside = maps[0].inside()[:, None, None] & maps[1].inside()[None, :, None] & maps[2].inside()[None, None, :]
    return np.where(inside, out, pad)


@pytest.mark.parametrize("geometry", [
    Geometry("resize", (24, 40, 36)),
    Geometry("spacing", (24, 40, 36), (5.0, 3.0, 2.5)),  # downsampled; the canvas overhangs the scan on every axis
    Geometry("spacing", (24, 40, 36), (2.0, 0.8, 0.6)),  # upsampled (steps < 1); the scan overhangs the canvas
])
def test_graph_resample_equals_numpy_in_both_runtimes(geometry):
    """The banded MatMuls (each output block on its input window) give the dense numpy definition."""
    import onnxruntime as ort
    import openvino as ov

    from abdoseg.inference.graph.preprocess_graph import build_resample_graph

    rng = np.random.default_rng(1)
    ct = rng.normal(0, 300, (37, 90, 71)).astype(np.int16)
    spacing = (3.0, 1.2, 0.9)
    ref = _resample_numpy(ct.astype(np.float64), axis_maps(ct.shape, spacing, geometry), geometry.pad_hu)
    model = build_resample_graph(geometry)
    feeds = {"ct": ct}
    if geometry.mode == "spacing":
        feeds["spacing"] = np.asarray(spacing, np.float32)
    out_ort = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out_ov = compiled(feeds)[0]
    np.testing.assert_allclose(out_ort, ref, atol=0.05)
    np.testing.assert_allclose(out_ov, ref, atol=0.05)
