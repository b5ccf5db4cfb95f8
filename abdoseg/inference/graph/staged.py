"""The segmentation graph in compiled parts, for a fast cold run and a small peak on a CPU.

    inplane  ct [B,H,W] (+ spacing) -> plane [B,Ny,Nx]     the in-plane half of the preprocessing, run on chunks of
                                                            INPLANE_CHUNK slices into one [D,Ny,Nx] array
    graph    plane [D,Ny,Nx] (+ spacing) -> classes         a card without a slab_tail: the rest of the
                                                            preprocessing, the network and ArgMax (as comparisons)
  or, where the card has a slab_tail (where its network may be cut), after the inplane part:
    prep     plane [D,Ny,Nx] (+ spacing) -> image [1,C,..]  the rest of the card's preprocessing (preprocess_graph)
    trunk    image -> the card's cut tensor [1,F,Nz/s,..]   fixed shape
    tail     cut tensor, one z-slab at a time -> classes    fixed slab shape; ArgMax inside (as comparisons)

Each part is compiled once as its file states it (dynamic scan shapes, fixed canvas). With a cache folder
(--cache-dir, baked into the image) the parts are files there and OpenVINO's model cache holds their compiled
blobs, found from the file without parsing it.

Every buffer of a dynamic-shape graph is fresh memory on a cold run (OpenVINO keeps them all; the kernel zeroes
each page on first touch). The in-plane resample in chunks never makes the float copy of the whole scan and its
x-resampled twin (a third of a GB of fresh pages on a 512x512x134 scan; docs/decisions.md).
The whole fp32 network keeps every full-resolution activation alive at once (~1.5 GB for the shipped net); in
slabs the full-resolution tail exists for one slab at a time and re-uses its buffers, slab after slab. Each slab
carries `halo` cut-slices of context on both sides (the card's `slab_tail`, from the architecture's receptive
field), so the labels equal the whole graph's.
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

from abdoseg.inference.card import ModelCard, SlabTail
from abdoseg.inference.graph.runtime import RuntimeName, Session, open_session

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


def network_of(composed: "onnx.ModelProto", image_shape: tuple[int, ...]) -> "onnx.ModelProto":
    """The composed graph's network and ArgMax ("image" [image_shape] -> "classes"), every tensor's shape inferred."""
    import onnx
    from onnx import TensorProto, helper

    graph = onnx.ModelProto()
    graph.CopyFrom(composed)
    del graph.graph.value_info[:]
    graph.graph.value_info.append(helper.make_tensor_value_info("image", TensorProto.FLOAT, list(image_shape)))
    return onnx.shape_inference.infer_shapes(onnx.utils.Extractor(graph).extract_model(["image"], ["classes"]))


def network_parts(composed: "onnx.ModelProto", tail_spec: SlabTail, image_shape: tuple[int, ...],
                  num_classes: int) -> dict[str, bytes]:
    """The composed graph's network cut at the card's cut tensor, serialized: {"trunk": image -> cut, "tail": cut
    -> classes, its ArgMax as comparisons}, the tail's input one slab of `slab_plan` (every slab has the same
    length). `image_shape`: the network's input."""
    import onnx

    extractor = onnx.utils.Extractor(network_of(composed, image_shape))  # every tensor's shape known, from "image"
    trunk = extractor.extract_model(["image"], [tail_spec.cut])
    tail = extractor.extract_model([tail_spec.cut], ["classes"])
    cut_shape = tuple(d.dim_value for d in trunk.graph.output[0].type.tensor_type.shape.dim)
    if len(cut_shape) != 5 or min(cut_shape) < 1:
        raise ValueError(f"slab_tail cut {tail_spec.cut!r} must be a [1,C,z,y,x] tensor of known shape, "
                         f"got {cut_shape}")
    argmax_as_comparisons(tail, num_classes)
    del tail.graph.value_info[:]  # shapes inferred for the whole canvas
    start, stop, _, _ = slab_plan(cut_shape[2], tail_spec)[0]
    tail.graph.input[0].type.tensor_type.shape.dim[2].dim_value = stop - start
    out = tail.graph.output[0].type.tensor_type.shape
    del out.dim[:]
    out.dim.extend(onnx.TensorShapeProto.Dimension(dim_param=n) for n in ("Z", "Y", "X"))
    return {"trunk": trunk.SerializeToString(), "tail": tail.SerializeToString()}


def whole_graph(composed: "onnx.ModelProto", card: ModelCard) -> bytes:
    """The graph from the in-plane result on, serialized: the rest of the card's preprocessing
    (build_from_plane_graph), then the composed graph's network and its ArgMax as comparisons."""
    from abdoseg.inference.graph.preprocess_graph import build_from_plane_graph, merge_front

    network = network_of(composed, card.image_shape)
    argmax_as_comparisons(network, card.num_classes)
    return merge_front(build_from_plane_graph, card, network, "image").SerializeToString()


def argmax_as_comparisons(model: "onnx.ModelProto", num_classes: int) -> None:
    """Replace the graph's ArgMax over the class axis (axis 1) by a Gather per class and a running
    Greater/Where/Max chain, in place: the same classes, ties to the lower index as ArgMax. OpenVINO runs ArgMax
    as TopK; the chain fuses into one element-wise kernel, several times faster (PERF_COUNT profile; figures in
    docs/decisions.md)."""
    from onnx import helper

    from abdoseg.inference.graph.preprocess_graph import _GraphBuilder

    nodes = list(model.graph.node)
    at = next(i for i, n in enumerate(nodes) if n.op_type == "ArgMax")
    argmax = nodes[at]
    attrs = {a.name: helper.get_attribute_value(a) for a in argmax.attribute}
    if attrs.get("axis") != 1 or attrs.get("keepdims", 1) != 0 or attrs.get("select_last_index", 0):
        raise ValueError(f"expected ArgMax(axis=1, keepdims=0), got {attrs}")
    g = _GraphBuilder(prefix="argmax/")
    # [1, ...] per class: the class axis gathered away, as ArgMax(keepdims=0) drops it
    score = [g.op("Gather", argmax.input[0], g.const(np.int64(c)), axis=1) for c in range(num_classes)]
    best, index = score[0], g.const(np.uint8(0))
    for c in range(1, num_classes):
        index = g.op("Where", g.op("Greater", score[c], best), g.const(np.uint8(c)), index)
        if c < num_classes - 1:
            best = g.op("Max", best, score[c])
    g.op("Identity", index, out=argmax.output[0])  # uint8 where ArgMax gave int64: the Cast to uint8 after it
    del model.graph.node[:]                        # keeps "classes" as it was
    model.graph.node.extend(nodes[:at] + g.nodes + nodes[at + 1:])
    del model.graph.value_info[:]  # recorded types no longer hold downstream (int64 -> uint8); they are optional


SLAB_PARTS = ("prep", "trunk", "tail")  # after "inplane", where the card has a slab_tail; else "graph"
#: Bumped when what the part files hold changes (2: the tail's slab length fixed in its file; 3: ArgMax as
#: comparisons; 4: the graph whole where the card has no slab_tail; 5: the in-plane resample as its own part), so
#: that a cache folder written by an older version is not read as the current one.
PARTS_FORMAT = 5
#: Slices per run of the in-plane part: its buffers stay small (8 x 512 x 512 floats) and are re-used chunk by chunk.
INPLANE_CHUNK = 8


def graph_parts(card: ModelCard, composed: Callable[[], "onnx.ModelProto"], cache_dir: Path | None
                ) -> dict[str, Path | bytes]:
    """The card's graph in parts: {"inplane", "graph"}, or {"inplane", "prep", "trunk", "tail"} where the card
    has a slab_tail. With a cache folder and a card checksum they are files under cache_dir/parts-<key>
    (written once, atomically), so a cold run reads them without importing onnx."""
    folder = None
    if cache_dir is not None and card.sha256:
        depends = {f: repr(getattr(card, f)) for f in ("sha256", "geometry", "windows", "zscore", "slab_tail")}
        depends["format"] = PARTS_FORMAT
        key = hashlib.sha256(json.dumps(depends, sort_keys=True).encode()).hexdigest()[:20]  # what the parts depend on
        folder = Path(cache_dir) / f"parts-{key}"
        if (folder / "parts.json").is_file():
            return {name: folder / f"{name}.onnx" for name in json.loads((folder / "parts.json").read_text())}
    from abdoseg.inference.graph.preprocess_graph import build_from_plane_graph, build_inplane_graph

    parts = {"inplane": build_inplane_graph(card.geometry).SerializeToString()}
    if card.slab_tail is None:
        parts["graph"] = whole_graph(composed(), card)
    else:
        parts.update(prep=build_from_plane_graph(card).SerializeToString(),
                     **network_parts(composed(), card.slab_tail, card.image_shape, card.num_classes))
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


def open_parts(card: ModelCard, composed: Callable[[], "onnx.ModelProto"], runtime: RuntimeName, threads: int,
               cache_dir: Path | None) -> Session:
    """The card's graph (`composed()` makes it) in `runtime`, in its parts (graph_parts), each compiled now as
    its file states it, through `cache_dir`, which also keeps the parts as files: one Session."""
    parts = graph_parts(card, composed, cache_dir)

    def opened(name: str, release_after_run: bool = True) -> Session:
        return open_session(parts[name], runtime, threads, cache_dir=cache_dir, static_shapes=False,
                            release_after_run=release_after_run)

    if "graph" in parts:
        rest = opened("graph")
    else:
        prep, trunk, tail = (opened(name, release_after_run=name != "tail") for name in SLAB_PARTS)
        rest = StagedSession(prep, trunk, tail, card.slab_tail, card.geometry.shape[1:])
    return InPlaneChunks(opened("inplane", release_after_run=False), rest, card.geometry.shape[1:])


class InPlaneChunks:
    """A Session (runtime.Session): the in-plane part over chunks of INPLANE_CHUNK consecutive slices into one
    [D,Ny,Nx] array (the last chunk shifted back to end at the last slice: one shape for all), then `rest` on it."""

    def __init__(self, inplane: Session, rest: Session, canvas_yx: tuple[int, int]) -> None:
        self.inplane, self.rest, self.canvas_yx = inplane, rest, tuple(canvas_yx)
        self.input_names = inplane.input_names
        self.description = f"{rest.description}; in-plane resample in chunks of {INPLANE_CHUNK} slices"

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Nothing to compile per scan shape: every part has dynamic shapes."""

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        ct, others = feeds["ct"], {k: v for k, v in feeds.items() if k != "ct"}
        depth, chunk = ct.shape[0], min(INPLANE_CHUNK, ct.shape[0])
        plane = np.empty((depth, *self.canvas_yx), np.float32)
        for start in [*range(0, depth - chunk, chunk), depth - chunk]:
            plane[start:start + chunk] = self.inplane.run({"ct": ct[start:start + chunk], **others})
        self.inplane.release()
        return self.rest.run({"plane": plane, **others})

    def release(self) -> None:
        self.inplane.release()
        self.rest.release()


class StagedSession:
    """A Session (runtime.Session) running prep, trunk and the tail in z-slabs; `run` returns the classes."""

    def __init__(self, prep: Session, trunk: Session, tail: Session, spec: SlabTail,
                 canvas_yx: tuple[int, int]) -> None:
        self.prep, self.trunk, self.tail, self.spec = prep, trunk, tail, spec
        self.canvas_yx = tuple(canvas_yx)
        self.input_names = prep.input_names
        self.description = f"{trunk.description}; network in two parts, its tail in z-slabs of {spec.slab}"

    def prepare(self, shape: tuple[int, ...]) -> None:
        self.prep.prepare(shape)

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        image = self.prep.run(feeds)
        cut = self.trunk.run({self.trunk.input_names[0]: image})
        del image
        s = self.spec.z_scale
        classes = np.empty((cut.shape[2] * s, *self.canvas_yx), np.uint8)
        for start, stop, keep, keep_stop in slab_plan(cut.shape[2], self.spec):
            out = self.tail.run({self.tail.input_names[0]: np.ascontiguousarray(cut[:, :, start:stop])})
            classes[keep * s:keep_stop * s] = out[(keep - start) * s:(keep_stop - start) * s]
        self.tail.release()
        return classes

    def release(self) -> None:
        for part in (self.prep, self.trunk, self.tail):
            part.release()


def slab_agreement(composed: "onnx.ModelProto", card: ModelCard, seed: int = 0) -> float:
    """Fraction of canvas voxels whose class the staged network (trunk + tail in z-slabs, onnxruntime) gives
    exactly as the whole network does, on a random image: 1.0 when the card's cut and halo are right."""
    parts = network_parts(composed, card.slab_tail, card.image_shape, card.num_classes)
    whole = network_of(composed, card.image_shape).SerializeToString()
    whole, trunk, tail = (open_session(m, "onnxruntime", 1) for m in (whole, parts["trunk"], parts["tail"]))
    staged = StagedSession(_Identity("image"), trunk, tail, card.slab_tail, card.geometry.shape[1:])
    image = np.random.default_rng(seed).random(card.image_shape, dtype=np.float32)
    return float(np.mean(whole.run({"image": image}) == staged.run({"image": image})))


class _Identity:
    """A stand-in preprocessing part that hands the network its input as is."""

    def __init__(self, name: str) -> None:
        self.input_names, self.description = (name,), "identity"

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return next(iter(feeds.values()))
