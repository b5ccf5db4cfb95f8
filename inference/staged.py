"""The segmentation graph in compiled parts, for a fast cold run and a small peak on a CPU.

    prep     ct [D,H,W] (+ spacing) -> image [1,C,Nz,Ny,Nx]   the card's preprocessing (preprocess_graph), compiled
                                                              once for any scan shape (dynamic shapes)
    network  image -> classes                                 fixed shape; ArgMax inside (as comparisons)
  or, where the card has a slab_tail (where its network may be cut):
    trunk    image -> the card's cut tensor [1,F,Nz/s,..]     fixed shape
    tail     cut tensor, one z-slab at a time -> classes      fixed slab shape; ArgMax inside (as comparisons)

Each part is compiled as its file states it. With a cache folder (--cache-dir, baked into the image) the parts
are files there and OpenVINO's model cache holds their compiled blobs, found from the file without parsing it.

The whole fp32 network keeps every full-resolution activation alive at once (~1.5 GB for the shipped net) and
touches all of it fresh on a cold run; in slabs the full-resolution tail exists for one slab at a time and re-uses its buffers, slab after slab. Each slab carries `halo` cut-slices of context on both sides
(the card's `slab_tail`, from the architecture's receptive field), so the labels equal the whole graph's.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from inference.card import ModelCard, SlabTail
from inference.runtime import RuntimeName, Session, open_session

if TYPE_CHECKING:
    import onnx

Slab = tuple[int, int, int, int]  # (in_start, in_stop, keep_start, keep_stop) in cut-slices


def slab_plan(depth: int, tail: SlabTail) -> list[Slab]:
    """Runs covering `depth` cut-slices: each keeps `tail.slab` slices (the last fewer) and reads `tail.halo` more
    on each side, shifted inwards at the ends so that every run has the same length (one compiled shape)."""
    n_in = tail.slab + 2 * tail.halo
    if depth <= n_in:
        return [(0, depth, 0, depth)]
    runs, keep = [], 0
    while keep < depth:
        keep_stop = min(depth, keep + tail.slab)
        start = max(0, min(keep - tail.halo, depth - n_in))
        runs.append((start, start + n_in, keep, keep_stop))
        keep = keep_stop
    return runs


def network_parts(composed: "onnx.ModelProto", tail_spec: SlabTail | None, image_shape: tuple[int, ...]
                  ) -> dict[str, bytes]:
    """The composed graph's network ("image" -> "classes", its ArgMax as comparisons), serialized: whole as
    {"network"} without `tail_spec`, else cut at its tensor as {"trunk": image -> cut, "tail": cut -> classes},
    the tail's input one slab of `slab_plan` (every slab has the same length). `image_shape`: the network's input."""
    import onnx
    from onnx import TensorProto, helper

    graph = onnx.ModelProto()
    graph.CopyFrom(composed)
    del graph.graph.value_info[:]
    graph.graph.value_info.append(helper.make_tensor_value_info("image", TensorProto.FLOAT, list(image_shape)))
    network = onnx.shape_inference.infer_shapes(onnx.utils.Extractor(graph).extract_model(["image"], ["classes"]))
    shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in network.graph.value_info}
    num_classes = shapes[_argmax_input(network)][1]
    if tail_spec is None:
        del network.graph.value_info[:]
        argmax_as_comparisons(network, num_classes)
        return {"network": network.SerializeToString()}
    extractor = onnx.utils.Extractor(network)  # every tensor's shape known, from "image"
    trunk = extractor.extract_model(["image"], [tail_spec.cut])
    tail = extractor.extract_model([tail_spec.cut], ["classes"])
    cut_shape = tuple(d.dim_value for d in trunk.graph.output[0].type.tensor_type.shape.dim)
    if len(cut_shape) != 5 or min(cut_shape) < 1:
        raise ValueError(f"slab_tail cut {tail_spec.cut!r} must be a [1,C,z,y,x] tensor of known shape, got {cut_shape}")
    argmax_as_comparisons(tail, num_classes)
    del tail.graph.value_info[:]  # shapes inferred for the whole canvas
    start, stop, _, _ = slab_plan(cut_shape[2], tail_spec)[0]
    tail.graph.input[0].type.tensor_type.shape.dim[2].dim_value = stop - start
    out = tail.graph.output[0].type.tensor_type.shape
    del out.dim[:]
    out.dim.extend(onnx.TensorShapeProto.Dimension(dim_param=n) for n in ("Z", "Y", "X"))
    return {"trunk": trunk.SerializeToString(), "tail": tail.SerializeToString()}


def _argmax_input(model: "onnx.ModelProto") -> str:
    return next(n.input[0] for n in model.graph.node if n.op_type == "ArgMax")


def argmax_as_comparisons(model: "onnx.ModelProto", num_classes: int) -> None:
    """Replace the graph's ArgMax over the class axis (axis 1) by a Gather per class and a running
    Greater/Where/Max chain, in place: the same classes, ties to the lower index as ArgMax. OpenVINO runs ArgMax
    as TopK, 110 ms on the 96x192x192 canvas with 6 classes on a 2-core EPYC; the chain fuses into one
    element-wise kernel of ~7 ms plus a 11 ms reorder (PERF_COUNT profile)."""
    from onnx import helper, numpy_helper

    nodes = list(model.graph.node)
    at = next(i for i, n in enumerate(nodes) if n.op_type == "ArgMax")
    argmax = nodes[at]
    attrs = {a.name: helper.get_attribute_value(a) for a in argmax.attribute}
    if attrs.get("axis") != 1 or attrs.get("keepdims", 1) != 0 or attrs.get("select_last_index", 0):
        raise ValueError(f"expected ArgMax(axis=1, keepdims=0), got {attrs}")
    new = []

    def const(name: str, value) -> str:
        new.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name)))
        return name

    score = [f"argmax/score{c}" for c in range(num_classes)]  # [1, ...]: the class axis gathered away
    for c in range(num_classes):
        new.append(helper.make_node("Gather", [argmax.input[0], const(f"argmax/c{c}", np.int64(c))], [score[c]], axis=1))
    best, index = score[0], const("argmax/k0", np.uint8(0))
    for c in range(1, num_classes):
        greater = f"argmax/greater{c}"
        new.append(helper.make_node("Greater", [score[c], best], [greater]))
        index = _op(new, "Where", [greater, const(f"argmax/k{c}", np.uint8(c)), index], f"argmax/index{c}")
        best = _op(new, "Max", [best, score[c]], f"argmax/best{c}") if c < num_classes - 1 else best
    new.append(helper.make_node("Identity", [index], [argmax.output[0]]))  # uint8 where ArgMax gave int64: the
    del model.graph.node[:]                                                   # Cast to uint8 after it keeps "classes"
    model.graph.node.extend(nodes[:at] + new + nodes[at + 1:])


def _op(nodes: list, op_type: str, inputs: list[str], output: str) -> str:
    from onnx import helper

    nodes.append(helper.make_node(op_type, inputs, [output]))
    return output


#: Bumped when what the part files hold changes (2: the tail's slab length fixed in its file; 3: ArgMax as
#: comparisons, the network whole where the card has no slab_tail), so that a cache folder written by an older
#: version is not read as the current one.
PARTS_FORMAT = 3


def graph_parts(card: ModelCard, composed: Callable[[], "onnx.ModelProto"], cache_dir: Path | None
                ) -> dict[str, Path | bytes]:
    """The card's graph in parts: {"prep", "network"}, or {"prep", "trunk", "tail"} where the card has a
    slab_tail. With a cache folder and a card checksum they are files under cache_dir/parts-<key> (written once,
    atomically), so a cold run reads them without importing onnx."""
    folder = None
    if cache_dir is not None and card.sha256:
        depends = {f: repr(getattr(card, f)) for f in ("sha256", "geometry", "windows", "zscore", "slab_tail")}
        depends["format"] = PARTS_FORMAT
        key = hashlib.sha256(json.dumps(depends, sort_keys=True).encode()).hexdigest()[:20]  # what the parts depend on
        folder = Path(cache_dir) / f"parts-{key}"
        if (folder / "parts.json").is_file():
            return {name: folder / f"{name}.onnx" for name in json.loads((folder / "parts.json").read_text())}
    from inference.preprocess_graph import build_preprocess_graph

    parts = {"prep": build_preprocess_graph(card).SerializeToString(),
             **network_parts(composed(), card.slab_tail, card.image_shape)}
    if folder is not None:
        try:
            _write_parts(folder, parts)
        except OSError:  # a read-only cache: the parts stay in memory
            pass
        if (folder / "parts.json").is_file():  # compiled from the files, as later runs will
            return {name: folder / f"{name}.onnx" for name in parts}
    return parts


def _write_parts(folder: Path, parts: dict[str, bytes]) -> None:
    """The parts into `folder`, appearing at once (a rename); a folder another process wrote first is kept."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".parts-", dir=folder.parent))
    for name, data in parts.items():
        (tmp / f"{name}.onnx").write_bytes(data)
    (tmp / "parts.json").write_text(json.dumps(list(parts)))
    try:
        os.rename(tmp, folder)
    except OSError:  # already there
        shutil.rmtree(tmp, ignore_errors=True)


class StagedSession:
    """A Session (runtime.Session) running prep, then the network: whole, or its trunk and then its tail in
    z-slabs; `run` returns the classes."""

    def __init__(self, prep: Session, network: Session, canvas_yx: tuple[int, int],
                 tail: Session | None = None, spec: SlabTail | None = None) -> None:
        self.prep, self.network, self.tail, self.spec = prep, network, tail, spec
        self.canvas_yx = tuple(canvas_yx)
        self.input_names = prep.input_names
        how = f"network in two parts, its tail in z-slabs of {spec.slab}" if tail is not None else "network whole"
        self.description = f"{network.description}; preprocessing and {how}"

    @classmethod
    def open(cls, card: ModelCard, composed: Callable[[], "onnx.ModelProto"], runtime: RuntimeName, threads: int,
             cache_dir: Path | None) -> "StagedSession":
        """The parts of the card's graph (`composed()` makes it) in `runtime`, compiled now as their files state
        them, through `cache_dir`, which also keeps the parts as files."""
        parts = graph_parts(card, composed, cache_dir)
        opened = {name: open_session(part, runtime, threads, cache_dir=cache_dir, static_shapes=False,
                                     release_after_run=name != "tail") for name, part in parts.items()}
        network = opened.get("network") or opened["trunk"]
        return cls(opened["prep"], network, card.geometry.shape[1:], opened.get("tail"), card.slab_tail)

    def prepare(self, shape: tuple[int, ...]) -> None:
        self.prep.prepare(shape)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        image = self.prep.run(feeds)
        out = self.network.run({self.network.input_names[0]: image})
        del image
        return out if self.tail is None else self._run_tail(out)

    def _run_tail(self, cut: np.ndarray) -> np.ndarray:
        s = self.spec.z_scale
        classes = np.empty((cut.shape[2] * s, *self.canvas_yx), np.uint8)
        for start, stop, keep, keep_stop in slab_plan(cut.shape[2], self.spec):
            out = self.tail.run({self.tail.input_names[0]: np.ascontiguousarray(cut[:, :, start:stop])})
            classes[keep * s:keep_stop * s] = out[(keep - start) * s:(keep_stop - start) * s]
        self.tail.release()
        return classes


def slab_agreement(composed: "onnx.ModelProto", card: ModelCard, seed: int = 0) -> float:
    """Fraction of canvas voxels whose class the staged network (trunk + tail in z-slabs, onnxruntime) gives
    exactly as the whole network does, on a random image: 1.0 when the card's cut and halo are right."""
    import onnx

    parts = network_parts(composed, card.slab_tail, card.image_shape)
    whole = onnx.utils.Extractor(composed).extract_model(["image"], ["classes"]).SerializeToString()
    whole, trunk, tail = (open_session(m, "onnxruntime", 1) for m in (whole, parts["trunk"], parts["tail"]))
    staged = StagedSession(_Identity("image"), trunk, card.geometry.shape[1:], tail, card.slab_tail)
    image = np.random.default_rng(seed).random(card.image_shape, dtype=np.float32)
    return float(np.mean(whole.run({"image": image}) == staged.run({"image": image})))


class _Identity:
    """A stand-in preprocessing part that hands the network its input as is."""

    def __init__(self, name: str) -> None:
        self.input_names, self.description = (name,), "identity"

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return next(iter(feeds.values()))
