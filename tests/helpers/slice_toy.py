"""A tiny deterministic 2D 'network' and its composed "slices" card, for fast pipeline tests of the 2D path."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from abdoseg.inference.card import COBRA_WINDOWS, Geometry, ModelCard, Window, ZScore, sha256_of

SLICE_HW = (40, 36)  # not square: an in-plane axis slip changes the shapes, not only the labels


def toy_slice_network(channels: int, classes: int = 5, seed: int = 9):
    """A 3x3 conv with seeded random weights, "slices" [B,C,H,W] -> "logits" [B,classes,H,W], as ONNX.
    Its kernel is not symmetric, so an in-plane flip or transpose changes the labels."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (classes, channels, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.5, classes).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["slices", "w", "b"], ["logits"], pads=[1] * 4)], "toy2d",
        [helper.make_tensor_value_info("slices", TensorProto.FLOAT, ["B", channels, *SLICE_HW])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", classes, *SLICE_HW])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def write_toy_slice_card(folder: Path, zscore: bool = False, batch: int = 3) -> Path:
    """Compose the toy network with the slice graph; write <folder>/toy2d.{onnx,json}; return the card path."""
    import onnx

    from abdoseg.inference.graph.slice_graph import compose_slices_with_network

    windows = (Window(60.0, 500.0),) if zscore else COBRA_WINDOWS
    draft = ModelCard(name="toy2d", model_file="toy2d.onnx", sha256=None, graph="composed",
                      geometry=Geometry("slices", (batch, *SLICE_HW)), windows=windows,
                      class_to_label=(0, 1, 2, 3, 4), network_input="slices", network_output="logits",
                      zscore=ZScore(40.0, 90.0) if zscore else None)
    onnx.save(compose_slices_with_network(toy_slice_network(len(windows)), draft), folder / "toy2d.onnx")
    card = replace(draft, sha256=sha256_of(folder / "toy2d.onnx"))
    card.save(folder / "toy2d.json")
    return folder / "toy2d.json"
