"""The one preprocessing definition, as an ONNX graph: canonical HU volume -> model-grid windows -> classes.

    ct [D,H,W] int16 HU (+ spacing [3] mm, z,y,x, in "spacing" mode; see scan.canonical_hu)
      -> anti-aliased linear resample onto the model grid   (geometry.AxisMap conventions, weights built in-graph)
      -> HU windows, each clipped and mapped to [0, 1]       -> image [1,C,Nz,Ny,Nx]
      -> network                                             -> scores [1,K,Nz,Ny,Nx]
      -> ArgMax over classes                                 -> classes [Nz,Ny,Nx] uint8

The resample is three MatMuls with banded weight matrices computed inside the graph from the input's shape,
so the file takes any input size and — unlike Resize(antialias=1), which OpenVINO accepts but computes without
anti-aliasing — gives the same numbers in onnxruntime and OpenVINO. It runs in-plane (x, then y) and then along z:
the in-plane half works slice by slice, so the CPU runtime runs it on chunks of slices (`build_inplane_graph`,
then `build_from_plane_graph`; abdoseg.inference.graph.staged) and never holds a float copy of the whole scan.
Training caches its inputs by running the resample part through onnxruntime, so both sides share this file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from abdoseg.inference.card import Geometry, ModelCard, Window

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

    def ops(self, op_type: str, *inputs: str, n_outputs: int, **attrs) -> list[str]:
        """A node with `n_outputs` outputs (e.g. Split); their names."""
        from onnx import helper

        names = [self._name(op_type.lower()) for _ in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names


@dataclass(frozen=True)
class _AxisNodes:
    """One axis's map in the graph: its input size ([1] int64), weights [n_out, n_in], inside mask [n_out], the
    output centres c_i [n_out] (input-index coordinates) and the weights' reach (input voxels either side)."""

    size: str
    weights: str
    inside: str
    centers: str
    reach: str


def _axis_nodes(g: _GraphBuilder, src: str, spacing: str | None, geometry: Geometry, axis: int) -> _AxisNodes:
    """In-graph twin of AxisMap.weights() and AxisMap.inside() for `src`'s `axis`."""
    n_out = geometry.shape[axis]
    f32 = lambda v: g.const(np.float32(v))  # noqa: E731
    size, n_in_f, step = _axis_step(g, src, spacing, geometry, axis)
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
    weights = g.op("Div", w, g.op("Max", total, f32(1e-12)))
    reach = g.op("Add", g.op("Div", f32(1), scale), f32(1))  # a weight is 0 beyond 1/scale; one voxel to spare
    return _AxisNodes(size, weights, inside, c, reach)


def _axis_step(g: _GraphBuilder, src: str, spacing: str | None, geometry: Geometry, axis: int
               ) -> tuple[str, str, str]:
    """`src`'s size along `axis` ([1] int64 and scalar float) and the step onto the model grid's axis: size / n_out
    ("resize", "slices"), or target spacing / input spacing ("spacing")."""
    d = g.op("Gather", g.op("Shape", src), g.const(np.array([axis], np.int64)))  # [1] int64
    d_f = g.op("Squeeze", g.op("Cast", d, to=1), g.const(np.array([0], np.int64)))  # scalar float
    if geometry.mode != "spacing":
        return d, d_f, g.op("Div", d_f, g.const(np.float32(geometry.shape[axis])))
    s_in = g.op("Squeeze", g.op("Gather", spacing, g.const(np.array([axis], np.int64))),
                g.const(np.array([0], np.int64)))
    return d, d_f, g.op("Div", g.const(np.float32(geometry.spacing[axis])), s_in)


#: Output blocks per axis of the banded MatMuls: each block reads only its window of the input.
BAND_BLOCKS = 4


def _banded_matmul(g: _GraphBuilder, x: str, a: _AxisNodes, axis: int, rank: int, n_out: int) -> str:
    """`x` with `axis` mapped by the axis's weights, as BAND_BLOCKS MatMuls of consecutive output blocks, each on
    the input window its weights reach (the weights outside it are zeros): the dense MatMul's numbers (same terms
    but zeros) at ~1/3.5 of its multiply-adds on a 512-wide axis. The last axis: x @ w^T; another: w @ x.
    The windows are computed for all blocks at once, so that each block adds only a few nodes (each node of a
    dynamic-shape graph costs time when OpenVINO loads it and at every run)."""
    i64 = lambda v: g.const(np.array(v, np.int64))  # noqa: E731
    edges = np.linspace(0, n_out, min(BAND_BLOCKS, n_out) + 1).round().astype(int)
    first, last = (g.op("Gather", a.centers, i64(e)) for e in (edges[:-1], edges[1:] - 1))
    lo = g.op("Cast", g.op("Floor", g.op("Sub", first, a.reach)), to=7)  # [blocks] int64
    hi = g.op("Cast", g.op("Ceil", g.op("Add", last, a.reach)), to=7)
    lo = g.op("Min", g.op("Max", lo, i64(0)), g.op("Sub", a.size, i64(1)))  # at least one voxel, inside the scan
    hi = g.op("Min", g.op("Max", hi, g.op("Add", lo, i64(1))), a.size)
    rows = g.ops("Split", a.weights, i64(np.diff(edges)), axis=0, n_outputs=len(edges) - 1)
    blocks = []
    for b, w in enumerate(rows):
        start, stop = (g.op("Gather", t, i64([b])) for t in (lo, hi))
        w = g.op("Slice", w, start, stop, i64([1]))
        xb = g.op("Slice", x, start, stop, i64([axis]))
        blocks.append(g.op("MatMul", xb, g.op("Transpose", w, perm=[1, 0])) if axis == rank - 1
                      else g.op("MatMul", w, xb))
    return g.op("Concat", *blocks, axis=axis) if len(blocks) > 1 else blocks[0]


def _off_scan(g: _GraphBuilder, x: str, mask: str, geometry: Geometry) -> str:
    """`x` + pad_hu where `mask` (broadcast) is 0: voxels off the scan read the pad value ("spacing" mode only; their
    weight rows are zero)."""
    if geometry.mode != "spacing":
        return x
    off = g.op("Mul", g.op("Sub", g.const(np.float32(1)), mask), g.const(np.float32(geometry.pad_hu)))
    return g.op("Add", x, off)


def _inplane(g: _GraphBuilder, ct: str, spacing: str | None, geometry: Geometry) -> str:
    """Nodes resampling `ct` [B,H,W] (int16) in-plane onto [B,Ny,Nx] float32, x then y; slice by slice, so a
    runtime may run them on any chunk of slices (abdoseg.inference.graph.staged)."""
    unsqueeze = lambda t, axes: g.op("Unsqueeze", t, g.const(np.array(axes, np.int64)))  # noqa: E731
    y, x = (_axis_nodes(g, ct, spacing, geometry, axis) for axis in (1, 2))
    bx = _banded_matmul(g, g.op("Cast", ct, to=1), x, 2, 3, geometry.shape[2])  # [B,H,Nx]
    plane = _banded_matmul(g, bx, y, 1, 3, geometry.shape[1])  # [B,Ny,Nx]
    return _off_scan(g, plane, g.op("Mul", unsqueeze(y.inside, [0, 2]), unsqueeze(x.inside, [0, 1])), geometry)


def _along_z(g: _GraphBuilder, plane: str, spacing: str | None, geometry: Geometry) -> str:
    """Nodes resampling `plane` [D,Ny,Nx] (the in-plane result of D consecutive slices) along z onto [Nz,Ny,Nx].
    The in-plane pad passes through unchanged: a row of z weights sums to 1 (to 0 off the scan, which reads the pad
    here)."""
    nz, ny, nx = geometry.shape
    z = _axis_nodes(g, plane, spacing, geometry, 0)
    flat = g.op("Reshape", plane, g.op("Concat", z.size, g.const(np.array([-1], np.int64)), axis=0))  # [D, Ny*Nx]
    out = g.op("Reshape", _banded_matmul(g, flat, z, 0, 2, nz), g.const(np.array([nz, ny, nx], np.int64)))
    return _off_scan(g, out, g.op("Unsqueeze", z.inside, g.const(np.array([1, 2], np.int64))), geometry)


def _resample(g: _GraphBuilder, ct: str, spacing: str | None, geometry: Geometry) -> str:
    """Nodes that resample `ct` [D,H,W] onto the model grid [Nz,Ny,Nx] (pad value off the scan): in-plane, then
    along z (the order that keeps the intermediate small: [D,Ny,Nx])."""
    return _along_z(g, _inplane(g, ct, spacing, geometry), spacing, geometry)


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


def build_inplane_graph(geometry: Geometry, opset: int = DEFAULT_OPSET) -> "onnx.ModelProto":
    """ct [B,H,W] (+ spacing) -> plane [B,Ny,Nx]: the in-plane half of the resample, for any B consecutive slices."""
    from onnx import TensorProto, helper

    g = _GraphBuilder()
    g.op("Identity", _inplane(g, "ct", "spacing", geometry), out="plane")
    out = helper.make_tensor_value_info("plane", TensorProto.FLOAT, ["D", *geometry.shape[1:]])
    return _model(g, _inputs(geometry), [out], "abdoseg_inplane", opset)


def build_from_plane_graph(card: ModelCard, opset: int = DEFAULT_OPSET) -> "onnx.ModelProto":
    """plane [D,Ny,Nx] (all the scan's slices, in-plane resampled; + spacing) -> image [1,C,Nz,Ny,Nx]: the rest of
    the preprocessing (along z, then the windows)."""
    from onnx import TensorProto, helper

    g = _GraphBuilder()
    _windows(g, _along_z(g, "plane", "spacing", card.geometry), card.windows, out="image")
    ins = [helper.make_tensor_value_info("plane", TensorProto.FLOAT, ["D", *card.geometry.shape[1:]]),
           *_inputs(card.geometry)[1:]]
    out = helper.make_tensor_value_info("image", TensorProto.FLOAT, list(card.image_shape))
    return _model(g, ins, [out], "abdoseg_from_plane", opset)


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


def _like(model: "onnx.ModelProto", network: "onnx.ModelProto") -> "onnx.ModelProto":
    """`model` with the network's IR version and its extra opset domains (onnx.compose.merge_models needs both)."""
    model.ir_version = network.ir_version
    model.opset_import.extend(o for o in network.opset_import if o.domain not in ("", "ai.onnx"))
    return model


def _default_opset(model: "onnx.ModelProto") -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), DEFAULT_OPSET)


def merge_front(build: Callable[[ModelCard, int], "onnx.ModelProto"], card: ModelCard, rest: "onnx.ModelProto",
                joint: str) -> "onnx.ModelProto":
    """The graph `build(card, opset)` makes, feeding `rest` through the tensor both name `joint`."""
    from onnx import compose

    return compose.merge_models(_like(build(card, _default_opset(rest)), rest), rest, io_map=[(joint, joint)])


def compose_around(network: "onnx.ModelProto", card: ModelCard,
                   front: Callable[[ModelCard, int], "onnx.ModelProto"], front_out: str,
                   back: Callable[[ModelCard, int], "onnx.ModelProto"], back_in: str) -> "onnx.ModelProto":
    """`front` + network + `back` as one graph, the network's input fed by `front_out` and its output feeding
    `back_in`: the network brought to opset 13 at least (the preprocessing's ReduceSum/Squeeze take axes as
    inputs), checked against the card's input and output names, and every part given one IR version and opset."""
    import onnx
    from onnx import compose

    network_opset = _default_opset(network)
    opset = max(network_opset, 13)
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
    pre, post = (_like(build(card, opset), network) for build in (front, back))
    net = compose.add_prefix(network, prefix="net/")
    both = compose.merge_models(pre, net, io_map=[(front_out, "net/" + card.network_input)])
    full = compose.merge_models(both, post, io_map=[("net/" + card.network_output, back_in)])
    full.graph.name = f"abdoseg_{card.name}"
    return full


def compose_with_network(network: "onnx.ModelProto", card: ModelCard) -> "onnx.ModelProto":
    """preprocess + network + ArgMax as one graph (input "ct" [+ "spacing"], output "classes")."""
    return compose_around(network, card, build_preprocess_graph, "image", _argmax_graph, "scores")
