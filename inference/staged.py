"""The segmentation graph in three compiled parts, for a fast cold run and a small peak on a CPU.

    prep   ct [D,H,W] (+ spacing) -> image [1,C,Nz,Ny,Nx]     the card's preprocessing (preprocess_graph), compiled
                                                              per scan shape: small, so it compiles in a blink
    trunk  image -> the card's cut tensor [1,F,Nz/s,..]       fixed shape: compiled once; OpenVINO's model cache
                                                              (--cache-dir, baked into the image) loads it
    tail   cut tensor, one z-slab at a time -> classes        fixed slab shape, cached alike; ArgMax inside

The whole-canvas graph keeps every full-resolution activation of the network alive at once (~1.5 GB for the
shipped net) and touches all of it fresh on a cold run; here the full-resolution tail exists for one slab at a
time and re-uses its buffers, slab after slab. Each slab carries `halo` cut-slices of context on both sides
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


def network_parts(composed: "onnx.ModelProto", cut: str, image_shape: tuple[int, ...]
                  ) -> tuple[bytes, bytes, tuple[int, ...]]:
    """The composed graph's network cut at tensor `cut`: trunk ("image" -> cut) and tail (cut -> "classes"),
    serialized, and the cut tensor's shape on the whole canvas (`image_shape`: the network's input); the
    tail's z extent is left free (each runtime fixes it for the slab)."""
    import onnx
    from onnx import TensorProto, helper

    graph = onnx.ModelProto()
    graph.CopyFrom(composed)
    del graph.graph.value_info[:]
    graph.graph.value_info.append(helper.make_tensor_value_info("image", TensorProto.FLOAT, list(image_shape)))
    network = onnx.utils.Extractor(graph).extract_model(["image"], ["classes"])
    extractor = onnx.utils.Extractor(onnx.shape_inference.infer_shapes(network))  # every tensor's shape, from "image"
    trunk = extractor.extract_model(["image"], [cut])
    tail = extractor.extract_model([cut], ["classes"])
    cut_shape = tuple(d.dim_value for d in trunk.graph.output[0].type.tensor_type.shape.dim)
    if len(cut_shape) != 5 or min(cut_shape) < 1:
        raise ValueError(f"slab_tail cut {cut!r} must be a [1,C,z,y,x] tensor of known shape, got {cut_shape}")
    del tail.graph.value_info[:]  # shapes inferred for the whole canvas
    tail.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "z"
    out = tail.graph.output[0].type.tensor_type.shape
    del out.dim[:]
    out.dim.extend(onnx.TensorShapeProto.Dimension(dim_param=n) for n in ("Z", "Y", "X"))
    return trunk.SerializeToString(), tail.SerializeToString(), cut_shape


PARTS = ("prep", "trunk", "tail")


def graph_parts(card: ModelCard, composed: Callable[[], "onnx.ModelProto"], cache_dir: Path | None
                ) -> tuple[tuple[Path | bytes, ...], tuple[int, ...]]:
    """(prep, trunk, tail) graphs and the cut's shape. With a cache folder and a card checksum they are files
    under cache_dir/parts-<key> (written once, atomically), so a cold run reads them without importing onnx."""
    folder = None
    if cache_dir is not None and card.sha256:
        depends = {f: repr(getattr(card, f)) for f in ("sha256", "geometry", "windows", "zscore", "slab_tail")}
        key = hashlib.sha256(json.dumps(depends, sort_keys=True).encode()).hexdigest()[:20]  # what the parts depend on
        folder = Path(cache_dir) / f"parts-{key}"
        if (folder / "cut_shape.json").is_file():
            return tuple(folder / f"{n}.onnx" for n in PARTS), tuple(json.loads((folder / "cut_shape.json").read_text()))
    from inference.preprocess_graph import build_preprocess_graph

    trunk, tail, cut_shape = network_parts(composed(), card.slab_tail.cut, card.image_shape)
    parts = (build_preprocess_graph(card).SerializeToString(), trunk, tail)
    if folder is not None:
        try:
            _write_parts(folder, parts, cut_shape)
        except OSError:  # a read-only cache: the parts stay in memory
            pass
    return parts, cut_shape


def _write_parts(folder: Path, parts: tuple[bytes, ...], cut_shape: tuple[int, ...]) -> None:
    """The parts into `folder`, appearing at once (a rename); a folder another process wrote first is kept."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".parts-", dir=folder.parent))
    for name, data in zip(PARTS, parts):
        (tmp / f"{name}.onnx").write_bytes(data)
    (tmp / "cut_shape.json").write_text(json.dumps(list(cut_shape)))
    try:
        os.rename(tmp, folder)
    except OSError:  # already there
        shutil.rmtree(tmp, ignore_errors=True)


class StagedSession:
    """A Session (runtime.Session) running prep, trunk and the tail in z-slabs; `run` returns the classes."""

    def __init__(self, prep: Session, trunk: Session, tail: Session, spec: SlabTail,
                 canvas_yx: tuple[int, int]) -> None:
        self.prep, self.trunk, self.tail, self.spec = prep, trunk, tail, spec
        self.canvas_yx = tuple(canvas_yx)
        self.input_names = prep.input_names
        self.description = f"{trunk.description}; network in two parts, its tail in z-slabs of {spec.slab}"

    @classmethod
    def open(cls, card: ModelCard, composed: Callable[[], "onnx.ModelProto"], runtime: RuntimeName, threads: int,
             cache_dir: Path | None) -> "StagedSession":
        """The three parts of the card's graph (`composed()` makes it) in `runtime`; the network parts compiled
        now, through `cache_dir`, which also keeps the parts as files (the preprocessing compiles per scan shape)."""
        spec = card.slab_tail
        (prep, trunk, tail), cut_shape = graph_parts(card, composed, cache_dir)
        session = cls(open_session(prep, runtime, threads),
                      open_session(trunk, runtime, threads, cache_dir=cache_dir),
                      open_session(tail, runtime, threads, cache_dir=cache_dir, release_after_run=False),
                      spec, card.geometry.shape[1:])
        session.trunk.prepare_inputs({session.trunk.input_names[0]: card.image_shape})
        start, stop, _, _ = slab_plan(cut_shape[2], spec)[0]
        session.tail.prepare_inputs({session.tail.input_names[0]: (*cut_shape[:2], stop - start, *cut_shape[3:])})
        return session

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


def slab_agreement(composed: "onnx.ModelProto", card: ModelCard, seed: int = 0) -> float:
    """Fraction of canvas voxels whose class the staged network (trunk + tail in z-slabs, onnxruntime) gives
    exactly as the whole network does, on a random image: 1.0 when the card's cut and halo are right."""
    import onnx

    trunk, tail, _ = network_parts(composed, card.slab_tail.cut, card.image_shape)
    whole = onnx.utils.Extractor(composed).extract_model(["image"], ["classes"]).SerializeToString()
    whole, trunk, tail = (open_session(m, "onnxruntime", 1) for m in (whole, trunk, tail))
    staged = StagedSession(_Identity("image"), trunk, tail, card.slab_tail, card.geometry.shape[1:])
    image = np.random.default_rng(seed).random(card.image_shape, dtype=np.float32)
    return float(np.mean(whole.run({"image": image}) == staged.run({"image": image})))


class _Identity:
    """A stand-in preprocessing part that hands the network its input as is."""

    def __init__(self, name: str) -> None:
        self.input_names, self.description = (name,), "identity"

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return next(iter(feeds.values()))
