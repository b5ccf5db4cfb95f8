"""The torch window twin equals the window step of the inference graph within 1e-4."""
import numpy as np
import onnxruntime as ort
import torch

from abdoseg.inference.card import Geometry, ModelCard
from abdoseg.inference.graph.preprocess_graph import build_window_graph
from abdoseg.training.windows import hu_to_channels


def test_window_twin_matches_the_graph():
    card = ModelCard(name="t", model_file="t.onnx", sha256=None, graph="composed",
                     geometry=Geometry("resize", (8, 16, 16)))
    session = ort.InferenceSession(build_window_graph(card).SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1100, 1500, (8, 16, 16)).astype(np.float32)
    hu[0, 0, :6] = [-150, 250, 10, 110, -1024, 3071]  # the window edges exactly
    graph = session.run(["image"], {"hu": hu})[0]
    twin = hu_to_channels(torch.from_numpy(hu))[None].numpy()
    assert graph.shape == twin.shape == (1, 2, 8, 16, 16)
    np.testing.assert_allclose(twin, graph, atol=1e-4, rtol=0)
    assert 0 < (twin == 0).mean() < 1 and 0 < (twin == 1).mean() < 1  # both clips were exercised
