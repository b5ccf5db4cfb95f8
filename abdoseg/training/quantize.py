"""INT8 post-training quantization of a card's network with NNCF, written only behind a gate.

    python -m abdoseg quantize --card abdoseg/weights/abdoseg_coarse.json --data tests/data/flare21 \\
        --out abdoseg/weights --name abdoseg_coarse_int8

Calibration: the network inputs ("image", the card's own preprocessing graph in onnxruntime) of every case of
--data under several framings (the training crops). NNCF quantizes the network's convolutions (weights int8,
activations u8); the card's preprocessing and ArgMax stay fp32. The INT8 graph is composed like the fp32 one
and written, with a card saying `"precision": "int8"` and the gate's figures, only when on every scan the
inference pipeline's labels (OpenVINO) agree with the fp32 card's on >= 99.5 % of voxels and no organ's DSC
against the reference labels moves by more than 0.005.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from abdoseg.inference.card import ModelCard, card_path, load_card, sha256_of
from abdoseg.training.data import SHORT_CROPS, find_cases, read_canonical

log = logging.getLogger(__name__)
MIN_AGREEMENT = 0.995
MAX_DSC_CHANGE = 0.005


class QuantizeError(ValueError):
    """The INT8 model failed its gate (or cannot be built)."""


def calibration_images(card: ModelCard, data_dir: Path) -> list[dict[str, np.ndarray]]:
    """{"image": [1,C,Nz,Ny,Nx]} for every case × short crop, through the card's preprocessing graph."""
    import onnxruntime as ort

    from abdoseg.inference.graph.preprocess_graph import build_preprocess_graph

    prep = ort.InferenceSession(build_preprocess_graph(card).SerializeToString(), providers=["CPUExecutionProvider"])
    images = []
    for case in find_cases(data_dir):
        hu, _, spacing = read_canonical(case, card.orientation, card.labelset)
        for crop in SHORT_CROPS:
            feeds = {"ct": np.ascontiguousarray(hu[crop.slices(hu.shape)]).astype(np.int16)}
            if card.geometry.mode == "spacing":
                feeds["spacing"] = np.asarray(spacing, np.float32)
            images.append({"image": prep.run(None, feeds)[0]})
    return images


def quantized_composed(composed: "onnx.ModelProto", card: ModelCard, images: list[dict]) -> "onnx.ModelProto":  # noqa: F821
    """The composed graph with its network ("image" -> "classes") quantized to INT8 by NNCF."""
    import nncf
    import onnx
    from onnx import compose

    from abdoseg.inference.graph.preprocess_graph import build_preprocess_graph

    network = onnx.utils.Extractor(composed).extract_model(["image"], ["classes"])
    quantized = nncf.quantize(network, nncf.Dataset(images), subset_size=len(images),
                              ignored_scope=nncf.IgnoredScope(patterns=["post/.*"], validate=False))
    prep = build_preprocess_graph(card, next(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx")))
    prep.ir_version = quantized.ir_version
    full = compose.merge_models(prep, quantized, io_map=[("image", "image")])
    full.graph.name = composed.graph.name + "_int8"
    return full


def gate(fp32_card: str | Path, int8_card: Path, data_dir: Path) -> dict[str, dict]:
    """Per scan: voxel agreement of the two cards' label maps and each organ's DSC change (pipeline, OpenVINO)."""
    import SimpleITK as sitk

    from abdoseg.evaluation.metrics import dice
    from abdoseg.inference.pipeline import Predictor

    fp32, int8 = (Predictor.load(c, runtime="openvino", threads=2) for c in (fp32_card, int8_card))
    names = fp32.card.label_map.names
    figures = {}
    for case in find_cases(data_dir):
        image, ref = sitk.ReadImage(str(case.image)), sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        a, b = fp32.segment_image(image), int8.segment_image(image)
        organs = {names[k]: round(dice(ref == k, b == k) - dice(ref == k, a == k), 5) for k in sorted(names)}
        figures[case.name] = {"agreement": round(float(np.mean(a == b)), 6), "dsc_change": organs}
    return figures


def _gate_failures(figures: dict[str, dict]) -> list[str]:
    bad = [f"{scan}: {f['agreement']:.4f} of voxels agree (< {MIN_AGREEMENT})" for scan, f in figures.items()
           if f["agreement"] < MIN_AGREEMENT]
    bad += [f"{scan}: {organ} DSC moves {d:+.4f}" for scan, f in figures.items()
            for organ, d in f["dsc_change"].items() if abs(d) > MAX_DSC_CHANGE]
    return bad


def quantize_card(card_spec: str | Path, data_dir: Path, out_dir: Path, name: str) -> tuple[Path, Path]:
    """Write `out_dir/<name>.onnx` and `.json` (precision int8) when the gate holds; QuantizeError otherwise."""
    import onnx

    card, model_path = load_card(card_spec)
    if card.graph != "composed" or card.precision != "fp32":
        raise QuantizeError(f"{card_spec}: needs an fp32 card with a composed graph")
    composed = quantized_composed(onnx.load(str(model_path)), card, calibration_images(card, Path(data_dir)))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_tmp = Path(tmp, f"{name}.onnx")
        onnx.save(composed, str(onnx_tmp))
        draft = dataclasses.replace(card, name=name, model_file=onnx_tmp.name, sha256=sha256_of(onnx_tmp),
                                    precision="int8", slab_tail=None)  # load_card made the locator's path absolute
        draft.save(Path(tmp, f"{name}.json"))
        figures = gate(card_spec, Path(tmp, f"{name}.json"), Path(data_dir))
        failures = _gate_failures(figures)
        if failures:
            raise QuantizeError("INT8 gate failed: " + "; ".join(failures))
        out_dir.mkdir(parents=True, exist_ok=True)
        onnx_path = out_dir / onnx_tmp.name
        onnx_path.write_bytes(onnx_tmp.read_bytes())
    provenance = {**card.provenance, "quantized_from": {"card": card.name, "sha256": card.sha256},
                  "quantization": {"tool": _nncf_version(), "calibration": f"{data_dir} x {len(SHORT_CROPS)} crops",
                                   "command": f"python -m abdoseg quantize --card {card_spec} --data {data_dir} "
                                              f"--out {out_dir} --name {name}",
                                   "gate": {"min_agreement": MIN_AGREEMENT, "max_dsc_change": MAX_DSC_CHANGE,
                                            "measured": figures}}}
    fields = {"name": name, "model_file": onnx_path.name, "sha256": draft.sha256, "precision": "int8",
              "provenance": provenance}
    card_path = out_dir / f"{name}.json"
    written = {**_card_json(card_spec), **fields}  # the locator as written
    written.pop("slab_tail", None)  # INT8 activations are small: the network runs whole (docs/runtimes.md)
    card_path.write_text(json.dumps(written, indent=2) + "\n")
    log.info("wrote %s and %s; gate %s", onnx_path, card_path, json.dumps(figures))
    return onnx_path, card_path


def _card_json(card_spec: str | Path) -> dict:
    """The fp32 card's JSON as written (its locator path relative to its folder)."""
    return json.loads(card_path(card_spec).read_text())


def _nncf_version() -> str:
    import nncf

    return f"nncf {nncf.__version__}"
