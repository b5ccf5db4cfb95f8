"""Shared fixtures: paths to the bundled real scans, and a tiny deterministic ONNX 'network' for fast pipeline tests."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = Path(__file__).resolve().parent / "data"
SHARED = ROOT.parent / "shared"
CASES = ("abdpelvis3mm", "upperabd1mm")


def real_image(case: str) -> Path:
    return DATA / "flare21" / "imagesTr" / f"{case}_0000.nii.gz"


def real_label(case: str) -> Path:
    return DATA / "flare21" / "labelsTr" / f"{case}.nii.gz"


def toy_network(shape=(24, 48, 48), classes: int = 6, seed: int = 0):
    """A 3x3x3 conv with seeded random weights (2 window channels -> `classes` scores), as an ONNX model.

    Its kernel is not symmetric, so any orientation slip changes the labels.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (classes, 2, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.5, classes).astype(np.float32)
    node = helper.make_node("Conv", ["img", "w", "b"], ["output"], pads=[1] * 6)
    graph = helper.make_graph(
        [node], "toy",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 2, *shape])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, classes, *shape])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="session")
def toy_card_path(tmp_path_factory) -> Path:
    """A composed toy model + its card (with sha256) in a temp folder."""
    import onnx

    from inference.card import Geometry, ModelCard, sha256_of
    from inference.preprocess_graph import compose_with_network

    folder = tmp_path_factory.mktemp("toy_model")
    net_card = ModelCard(name="toy", model_file="toy.onnx", sha256=None, graph="network",
                         geometry=Geometry("resize", (24, 48, 48)))
    onnx.save(compose_with_network(toy_network(), net_card), folder / "toy.onnx")
    card = ModelCard(name="toy", model_file="toy.onnx", sha256=sha256_of(folder / "toy.onnx"), graph="composed",
                     geometry=net_card.geometry)
    card.save(folder / "toy.json")
    return folder / "toy.json"
