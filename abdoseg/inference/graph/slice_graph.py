"""Slice geometry (card geometry mode "slices"): 2D networks run over the canonical scan's axial slices.

    ct [B,H,W] int16 HU (B consecutive axial slices of the canonical scan)
      -> anti-aliased linear resample in-plane onto [Ny,Nx]  (preprocess_graph's in-graph AxisMap weights,
                                                              y and x only: z is untouched)
      -> intensity: the card's HU windows to [0, 1] (C channels), or with `zscore` the one window as a clip
         range, then (HU - mean) / std (nnU-Net's CT scheme)                              -> slices [B,C,Ny,Nx]
      -> 2D network                                                                      -> logits [B,K,Ny,Nx]
      -> ArgMax over classes                                                             -> classes [B,Ny,Nx] uint8

`SliceBatches` is a runtime Session over that graph which takes a whole canonical scan: it runs the graph on
batches of `geometry.shape[0]` slices (the last one padded with copies of its last slice, so one compiled
shape serves the whole scan) and stacks the classes. The pipeline's later stages (component rule on the
stacked volume, nearest upsample) are the 3D path's: geometry.axis_maps gives z a step of 1 in this mode.
Training resamples its slices with `build_slice_resample_graph` (abdoseg.training.slices.data), so both sides share it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from abdoseg.inference.card import Geometry, ModelCard
from abdoseg.inference.graph.preprocess_graph import DEFAULT_OPSET, IR_VERSION, _GraphBuilder, _inplane, compose_around

if TYPE_CHECKING:
    import onnx

    from abdoseg.inference.graph.runtime import Session

INPUT, OUTPUT = "ct", "classes"


def _check(geometry: Geometry) -> None:
    if geometry.mode != "slices":
        raise ValueError(f"the slice graph needs geometry mode 'slices', got {geometry.mode!r}")


def _intensity(g: _GraphBuilder, hu: str, card: ModelCard, out: str) -> str:
    """Nodes mapping HU [B,Ny,Nx] to the network's channels [B,C,Ny,Nx] (the twin of
    abdoseg.training.slices.data.Intensity)."""
    f32 = lambda v: g.const(np.float32(v))  # noqa: E731
    axis1 = g.const(np.array([1], np.int64))
    if card.zscore is not None:
        (w,) = card.windows
        x = g.op("Clip", hu, f32(w.low), f32(w.high))
        x = g.op("Div", g.op("Sub", x, f32(card.zscore.mean)), f32(card.zscore.std))
        return g.op("Unsqueeze", x, axis1, out=out)
    channels = []
    for w in card.windows:
        x = g.op("Clip", g.op("Div", g.op("Sub", hu, f32(w.low)), f32(w.width)), f32(0), f32(1))
        channels.append(g.op("Unsqueeze", x, axis1))
    return g.op("Concat", *channels, axis=1, out=out)


def _model(g: _GraphBuilder, outputs: list, name: str, opset: int) -> "onnx.ModelProto":
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(INPUT, TensorProto.INT16, ["B", "H", "W"])]
    model = helper.make_model(helper.make_graph(g.nodes, name, inputs, outputs), ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def build_slice_resample_graph(geometry: Geometry, opset: int = DEFAULT_OPSET) -> "onnx.ModelProto":
    """ct [B,H,W] int16 -> hu [B,Ny,Nx] float32: the in-plane resample alone (training caches this)."""
    from onnx import TensorProto, helper

    _check(geometry)
    g = _GraphBuilder(prefix="slice/")
    g.op("Identity", _inplane(g, INPUT, None, geometry), out="hu")
    out = helper.make_tensor_value_info("hu", TensorProto.FLOAT, ["B", *geometry.shape[1:]])
    return _model(g, [out], "abdoseg_slice_resample", opset)


def build_slice_preprocess_graph(card: ModelCard, opset: int = DEFAULT_OPSET) -> "onnx.ModelProto":
    """ct [B,H,W] int16 -> slices [B,C,Ny,Nx]: what the 2D network sees."""
    from onnx import TensorProto, helper

    _check(card.geometry)
    g = _GraphBuilder(prefix="slice/")
    _intensity(g, _inplane(g, INPUT, None, card.geometry), card, out="slices")
    out = helper.make_tensor_value_info("slices", TensorProto.FLOAT, ["B", len(card.windows), *card.geometry.shape[1:]])
    return _model(g, [out], "abdoseg_slice_preprocess", opset)


def _argmax_graph(card: ModelCard, opset: int) -> "onnx.ModelProto":
    import onnx
    from onnx import TensorProto, helper

    g = _GraphBuilder(prefix="slicepost/")
    g.op("Cast", g.op("ArgMax", "logits", axis=1, keepdims=0), to=TensorProto.UINT8, out=OUTPUT)
    hw = list(card.geometry.shape[1:])
    ins = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", card.num_classes, *hw])]
    outs = [helper.make_tensor_value_info(OUTPUT, TensorProto.UINT8, ["B", *hw])]
    model = helper.make_model(helper.make_graph(g.nodes, "abdoseg_slice_argmax", ins, outs), ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def compose_slices_with_network(network: "onnx.ModelProto", card: ModelCard) -> "onnx.ModelProto":
    """slice preprocess + 2D network + ArgMax as one graph: "ct" [B,H,W] int16 -> "classes" [B,Ny,Nx] uint8."""
    return compose_around(network, card, build_slice_preprocess_graph, "slices", _argmax_graph, "logits")


class SliceBatches:
    """A Session taking a whole canonical scan "ct" [D,H,W]: the slice graph runs on batches of `batch`
    consecutive slices (the last batch padded with copies of its last slice) and the classes are stacked
    into [D,Ny,Nx]. Peak memory is that of one batch, whatever the scan's length."""

    def __init__(self, inner: "Session", batch: int) -> None:
        if batch < 1:
            raise ValueError(f"slices per batch must be >= 1, got {batch}")
        self.inner, self.batch = inner, int(batch)
        self.input_names = inner.input_names
        self.description = f"{inner.description}, {self.batch} slices per run"

    def prepare(self, shape: tuple[int, ...]) -> None:
        self.inner.prepare((min(self.batch, shape[0]), *shape[1:]))

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        ct = feeds[INPUT]
        depth = ct.shape[0]
        b = min(self.batch, depth)
        out: np.ndarray | None = None
        for z0 in range(0, depth, b):
            chunk = ct[z0:z0 + b]
            n = chunk.shape[0]
            if n < b:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, axis=0)])
            classes = np.asarray(self.inner.run({INPUT: np.ascontiguousarray(chunk)}))
            if out is None:
                out = np.empty((depth, *classes.shape[1:]), classes.dtype)
            out[z0:z0 + n] = classes[:n]
        assert out is not None  # depth >= 1: a scan has at least one slice
        return out
