"""Fixtures shared by every test module (helpers live in tests/helpers, not here)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.slice_toy import write_toy_slice_card
from tests.helpers.synthetic import toy_network


@pytest.fixture(scope="session")
def toy_card_path(tmp_path_factory) -> Path:
    """A composed toy 3D model + its card (with sha256) in a temp folder."""
    import onnx

    from abdoseg.inference.card import Geometry, ModelCard, sha256_of
    from abdoseg.inference.graph.preprocess_graph import compose_with_network

    folder = tmp_path_factory.mktemp("toy_model")
    net_card = ModelCard(name="toy", model_file="toy.onnx", sha256=None, graph="network",
                         geometry=Geometry("resize", (24, 48, 48)))
    onnx.save(compose_with_network(toy_network(), net_card), folder / "toy.onnx")
    card = ModelCard(name="toy", model_file="toy.onnx", sha256=sha256_of(folder / "toy.onnx"), graph="composed",
                     geometry=net_card.geometry)
    card.save(folder / "toy.json")
    return folder / "toy.json"


@pytest.fixture(scope="session")
def slice_card_path(tmp_path_factory) -> Path:
    """The toy 2D network's composed "slices" card (tests/helpers/slice_toy.py)."""
    return write_toy_slice_card(tmp_path_factory.mktemp("toy2d"))


@pytest.fixture(scope="session", params=["3d", "slices"])
def any_toy_card_path(request) -> Path:
    """The toy 3D card, then the toy 2D one: the tests that take it hold for both geometries."""
    return request.getfixturevalue("toy_card_path" if request.param == "3d" else "slice_card_path")
