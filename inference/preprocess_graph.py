"""The one preprocessing definition, as an ONNX graph: canonical HU volume -> model-grid windows -> classes.

    ct [D,H,W] int16 HU (+ spacing [3] mm, z,y,x, in "spacing" mode; see scan.canonical_hu)
      -> anti-aliased linear resample onto the model grid   (geometry.AxisMap conventions, weights built in-graph)
      -> HU windows, each clipped and mapped to [0, 1]       -> image [1,C,Nz,Ny,Nx]
      -> network                                             -> scores [1,K,Nz,Ny,Nx]
      -> ArgMax over classes                                 -> classes [Nz,Ny,Nx] uint8

The resample is three MatMuls with banded weight matrices computed inside the graph from the input's shape,
so the file takes any input size, costs ~0.1 s on a 512x512x134 scan, and — unlike Resize(antialias=1), which
OpenVINO accepts but computes without anti-aliasing — gives the same numbers in onnxruntime and OpenVINO.
Training caches its inputs by running the resample part through onnxruntime, so both sides share this file.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from inference.card import Geometry, ModelCard, Window

if TYPE_CHECKING:
    import onnx

DEFAULT_OPSET = 17
#: IR version of the graphs built here: opset 17 needs 8. Left to onnx's default (14 with onnx 1.23), onnxruntime
#: before 1.31 refuses them ("Unsupported model IR version: 14"), as a GPU machine's onnxruntime 1.30 did.
IR_VERSION = 8


class _GraphBuilder:
    """Appends nodes with unique names; constants become Constant nodes so subgraphs stay self-contained."""

    def __init__(self, prefix: str = "pre/") -> None:
        import onnx  # noqa: F401 - fail early with a clear ImportError

        self.nodes: list = []
        self.prefix = prefix
        self._n = 0

    def _name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}{hint}_{self._n}"

    def const(self, value: np.ndarray | float | int, hint: str = "c") -> str:
        from onnx import helper, numpy_helper

        name = self._name(hint)
        self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name)))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        from onnx import helper

        name = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], **attrs))
        return name


def _axis_weights(g: _GraphBuilder, n_in_f: str, n_out: int, step: str) -> tuple[str, str]:
    """In-graph twin of AxisMap.weights() and AxisMap.inside(): returns ([n_out, n_in] weights, [n_out] mask)."""
    f32 = lambda v: g.const(np.float32(v))  # noqa: E731
    i = g.op("Range", f32(0), f32(n_out), f32(1))
    j = g.op("Range", f32(0), n_in_f, f32(1))
    half_in = g.op("Div", g.op("Sub", n_in_f, f32(1)), f32(2))
    c = g.op("Add", g.op("Mul", g.op("Sub", i, f32((n_out - 1) / 2)), step), half_in)
    inside = g.op(
        "Cast",
        g.op("And", g.op("GreaterOrEqual", c, f32(-0.5)), g.op("LessOrEqual", c, g.op("Sub", n_in_f, f32(0.5)))),
        to=1,
    )
    scale = g.op("Min", g.op("Div", f32(1), step), f32(1))
    dist = g.op("Abs", g.op("Sub", j, g.op("Unsqueeze", c, g.const(np.array([1], np.int64)))))
    w = g.op("Relu", g.op("Sub", f32(1), g.op("Mul", dist, scale)))
    w = g.op("Mul", w, g.op("Unsqueeze", inside, g.const(np.array([1], np.int64))))
    total = g.op("ReduceSum", w, g.const(np.array([1], np.int64)), keepdims=1)
    return g.op("Div", w, g.op("Max", total, f32(1e-12))), inside


def _resample(g: _GraphBuilder, ct: str, spacing: str | None, geometry: Geometry) -> str:
    """Nodes that resample `ct` [D,H,W] onto the model grid [Nz,Ny,Nx] (pad value off the scan)."""
    nz, ny, nx = geometry.shape
    shape = g.op("Shape", ct)
    ct = g.op("Cast", ct, to=1)  # int16 -> float32: a transient the runtime frees after the first MatMul
    dims, dims_f, steps = [], [], []
    for axis, n_out in enumerate(geometry.shape):
        d = g.op("Gather", shape, g.const(np.array([axis], np.int64)))  # [1] int64
        d_f = g.op("Squeeze", g.op("Cast", d, to=1), g.const(np.array([0], np.int64)))  # scalar float
        if geometry.mode == "resize":
            step = g.op("Div", d_f, g.const(np.float32(n_out)))
        else:
            s_in = g.op("Squeeze", g.op("Gather", spacing, g.const(np.array([axis], np.int64))), g.const(np.array([0], np.int64)))
            step = g.op("Div", g.const(np.float32(geometry.spacing[axis])), s_in)
        dims.append(d)
        dims_f.append(d_f)
        steps.append(step)
    (wz, mz), (wy, my), (wx, mx) = (_axis_weights(g, dims_f[a], geometry.shape[a], steps[a]) for a in range(3))
    flat = g.op("Reshape", ct, g.op("Concat", dims[0], g.const(np.array([-1], np.int64)), axis=0))  # [D, H*W]
    z = g.op("MatMul", wz, flat)  # [Nz, H*W]
    z = g.op("Reshape", z, g.op("Concat", g.const(np.array([nz], np.int64)), dims[1], dims[2], axis=0))  # [Nz,H,W]
    zx = g.op("MatMul", z, g.op("Transpose", wx, perm=[1, 0]))  # [Nz,H,Nx]
    out = g.op("MatMul", wy, zx)  # [Ny,H]@[Nz,H,Nx] -> [Nz,Ny,Nx]
    if geometry.mode == "spacing":  # voxels off the scan read the pad value (their weight rows are zero)
        u = lambda t, axes: g.op("Unsqueeze", t, g.const(np.array(axes, np.int64)))  # noqa: E731
        mask = g.op("Mul", g.op("Mul", u(mz, [1, 2]), u(my, [0, 2])), u(mx, [0, 1]))
        out = g.op("Add", out, g.op("Mul", g.op("Sub", g.const(np.float32(1)), mask), g.const(np.float32(geometry.pad_hu))))
    return out


def _windows(g: _GraphBuilder, hu: str, windows: tuple[Window, ...], out: str | None = None) -> str:
    """Nodes mapping HU [Nz,Ny,Nx] to the window channels [1,C,Nz,Ny,Nx] in [0, 1]."""
    channels = []
    for w in windows:
        x = g.op("Div", g.op("Sub", hu, g.const(np.float32(w.low))), g.const(np.float32(w.width)))
        x = g.op("Clip", x, g.const(np.float32(0)), g.const(np.float32(1)))
        channels.append(g.op("Unsqueeze", x, g.const(np.array([0, 1], np.int64))))
    return g.op("Concat", *channels, axis=1, out=out)


def _inputs(geometry: Geometry) -> list:
    from onnx import TensorProto, helper

    ins = [helper.make_tensor_value_info("ct", TensorProto.INT16, ["D", "H", "W"])]
    if geometry.mode == "spacing":
        ins.append(helper.make_tensor_value_info("spacing", TensorProto.FLOAT, [3]))
    return ins


def _model(g: _GraphBuilder, inputs: list, outputs: list, name: str, opset: int) -> "onnx.ModelProto":
    import onnx
    from onnx import helper

    model = helper.make_model(helper.make_graph(g.nodes, name, inputs, outputs), ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def build_resample_graph(geometry: Geometry, opset: int = DEFAULT_OPSET) -> "onnx.ModelProto":
    """ct [D,H,W] (+ spacing) -> hu [Nz,Ny,Nx]: the resample alone (training caches this)."""
    from onnx import TensorProto, helper

    g = _GraphBuilder()
    g.op("Identity", _resample(g, "ct", "spacing", geometry), out="hu")
    out = helper.make_tensor_value_info("hu", TensorProto.FLOAT, list(geometry.shape))
    return _model(g, _inputs(geometry), [out], "abdoseg_resample", opset)


def build_window_graph(card: ModelCard, opset: int = DEFAULT_OPSET) -> "onnx.ModelProto":
    """hu [Nz,Ny,Nx] -> image [1,C,Nz,Ny,Nx]: the windows alone (for testing training's twin)."""
    from onnx import TensorProto, helper

    g = _GraphBuilder()
    _windows(g, "hu", card.windows, out="image")
    shape = list(card.geometry.shape)
    ins = [helper.make_tensor_value_info("hu", TensorProto.FLOAT, shape)]
    out = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, len(card.windows), *shape])
    return _model(g, ins, [out], "abdoseg_windows", opset)


def build_preprocess_graph(card: ModelCard, opset: int = DEFAULT_OPSET) -> "onnx.ModelProto":
    """ct [D,H,W] (+ spacing) -> image [1,C,Nz,Ny,Nx]: what the network sees."""
    from onnx import TensorProto, helper

    g = _GraphBuilder()
    _windows(g, _resample(g, "ct", "spacing", card.geometry), card.windows, out="image")
    out = helper.make_tensor_value_info("image", TensorProto.FLOAT, list(card.image_shape))
    return _model(g, _inputs(card.geometry), [out], "abdoseg_preprocess", opset)


def _argmax_graph(card: ModelCard, opset: int) -> "onnx.ModelProto":
    from onnx import TensorProto, helper

    g = _GraphBuilder(prefix="post/")
    idx = g.op("ArgMax", "scores", axis=1, keepdims=0)  # [1,Nz,Ny,Nx] int64
    g.op("Cast", g.op("Squeeze", idx, g.const(np.array([0], np.int64))), to=TensorProto.UINT8, out="classes")
    shape = list(card.geometry.shape)
    ins = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, card.num_classes, *shape])]
    out = helper.make_tensor_value_info("classes", TensorProto.UINT8, shape)
    return _model(g, ins, [out], "abdoseg_argmax", opset)


def compose_with_network(network: "onnx.ModelProto", card: ModelCard) -> "onnx.ModelProto":
    """preprocess + network + ArgMax as one graph (input "ct" [+ "spacing"], output "classes")."""
    import onnx
    from onnx import compose

    network_opset = next((o.version for o in network.opset_import if o.domain in ("", "ai.onnx")), DEFAULT_OPSET)
    opset = max(network_opset, 13)  # the preprocessing nodes need opset 13 (ReduceSum/Squeeze axes as inputs)
    if opset != network_opset:
        network = onnx.version_converter.convert_version(network, opset)
    in_names = [i.name for i in network.graph.input]
    out_names = [o.name for o in network.graph.output]
    if card.network_input not in in_names or card.network_output not in out_names:
        raise ValueError(
            f"network inputs {in_names} / outputs {out_names} do not match the card's "
            f"{card.network_input!r} / {card.network_output!r}"
        )
    # merge_models needs one IR version and the same opset for the default domain on both sides
    pre = build_preprocess_graph(card, opset)
    post = _argmax_graph(card, opset)
    for m in (pre, post):
        m.ir_version = network.ir_version
        extra = [o for o in network.opset_import if o.domain not in ("", "ai.onnx")]
        m.opset_import.extend(extra)
    net = compose.add_prefix(network, prefix="net/")
    both = compose.merge_models(pre, net, io_map=[("image", "net/" + card.network_input)])
    full = compose.merge_models(both, post, io_map=[("net/" + card.network_output, "scores")])
    full.graph.name = f"abdoseg_{card.name}"
    return full
