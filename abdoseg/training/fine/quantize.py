"""INT8 post-training quantization of the fine stage's graph with NNCF, behind the coarse card's gate.

    python -m abdoseg quantize-fine --weights abdoseg/weights --data tests/data/flare21 --coarse flare21 \\
        --out abdoseg/weights

Calibration: the fine graph's inputs ("image") for the organ crops of every case of --data, made as the torch-free
stage makes them (abdoseg.inference.fine.graph_stage.network_input). NNCF quantizes the convolutions (weights int8,
activations u8); ArgMax stays as it is. The INT8 graph and its card (fine_int8.json: `network_file` the INT8 graph,
the gate's figures in its provenance) are written only when, on every scan, the two-stage pipeline's labels with the
INT8 graph agree with those of the fp32 graph on >= 99.5 % of voxels and no organ's DSC moves by more than 0.005
(abdoseg.training.quantize's thresholds).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from abdoseg.inference.card import WEIGHTS_DIR, sha256_of
from abdoseg.inference.fine.card import FINE_CARD_NAME, FineCard, load_fine_card
from abdoseg.training.quantize import MAX_DSC_CHANGE, MIN_AGREEMENT, QuantizeError, _gate_failures, _nncf_version

INT8_CARD_NAME = "fine_int8.json"
INT8_NETWORK_FILE = "fine_int8.onnx"


def quantized_network(network_path: Path, images: Sequence[np.ndarray]) -> "onnx.ModelProto":  # noqa: F821
    """The fine graph with its convolutions quantized to INT8 (ArgMax and its cast left alone)."""
    import nncf
    import onnx

    model = onnx.load(str(network_path))
    tail = [n.name for n in model.graph.node if n.op_type in ("ArgMax", "Cast", "Squeeze", "Gather")]
    return nncf.quantize(model, nncf.Dataset([{"image": i} for i in images]), subset_size=len(images),
                         ignored_scope=nncf.IgnoredScope(names=tail, validate=False))


def gate(coarse: str, fp32_card: Path, int8_card: Path, data_dir: Path) -> dict[str, dict]:
    """Per scan: voxel agreement of the two-stage labels with each fine graph and each organ's DSC change."""
    import SimpleITK as sitk

    from abdoseg.evaluation.metrics import dice
    from abdoseg.inference.fine.graph_stage import FineGraphStage
    from abdoseg.inference.pipeline import Predictor
    from abdoseg.training.data import find_cases

    predictor = Predictor.load(coarse, runtime="openvino", threads=2)
    fp32, int8 = (FineGraphStage.load(c, "openvino", 2) for c in (fp32_card, int8_card))
    fp32.card = dataclasses.replace(fp32.card, margin_mm=int8.card.margin_mm)  # both graphs on the same crops
    stages = (fp32, int8)
    names = predictor.card.label_map.names
    figures = {}
    for case in find_cases(data_dir):
        image, ref = sitk.ReadImage(str(case.image)), sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
        labels = []
        for stage in stages:
            predictor.fine = stage
            labels.append(predictor.segment_image(image))
        a, b = labels
        organs = {names[k]: round(dice(ref == k, b == k) - dice(ref == k, a == k), 5) for k in sorted(names)}
        figures[case.name] = {"agreement": round(float(np.mean(a == b)), 6), "dsc_change": organs}
    return figures


def quantize_fine(weights: Path, data_dir: Path, out_dir: Path, coarse: str = "flare21",
                  margin_mm: float | None = None) -> Path:
    """Write `out_dir`/fine_int8.onnx and fine_int8.json when the gate holds; QuantizeError otherwise.
    `margin_mm`: the INT8 card's crop margin (None: the fp32 card's); calibration and gate use it."""
    import onnx

    from abdoseg.training.fine.export import crop_images

    card, _ = load_fine_card(weights)
    if margin_mm is not None:
        card = dataclasses.replace(card, margin_mm=margin_mm)
    card_path = Path(weights) / FINE_CARD_NAME if Path(weights).is_dir() else Path(weights)
    if card.network_file is None:
        raise QuantizeError(f"{card_path}: the fine card names no network_file (run abdoseg export-fine first)")
    quantized = quantized_network(card_path.parent / card.network_file, crop_images(card, Path(data_dir)))
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(quantized, str(Path(tmp, INT8_NETWORK_FILE)))
        draft = _int8_card(card, Path(tmp, INT8_NETWORK_FILE), {})
        draft.save(Path(tmp, INT8_CARD_NAME))
        figures = gate(coarse, card_path, Path(tmp, INT8_CARD_NAME), Path(data_dir))
        failures = _gate_failures(figures)
        if failures:
            raise QuantizeError("INT8 gate failed: " + "; ".join(failures))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / INT8_NETWORK_FILE).write_bytes(Path(tmp, INT8_NETWORK_FILE).read_bytes())
    quantization = {"tool": _nncf_version(), "calibration": f"organ crops of {data_dir}",
                    "quantized_from": {"file": card.network_file, "sha256": card.network_sha256},
                    "command": f"python -m abdoseg quantize-fine --weights {weights} --data {data_dir} "
                               f"--coarse {coarse} --out {out_dir}"
                               + ("" if margin_mm is None else f" --margin-mm {margin_mm:g}"),
                    "gate": {"coarse": coarse, "min_agreement": MIN_AGREEMENT, "max_dsc_change": MAX_DSC_CHANGE,
                             "measured": figures}}
    _int8_card(card, out_dir / INT8_NETWORK_FILE, quantization).save(out_dir / INT8_CARD_NAME)
    return out_dir / INT8_CARD_NAME


def _int8_card(card: FineCard, network: Path, quantization: dict) -> FineCard:
    provenance = dataclasses.replace(card.provenance, quantization=quantization)
    # no validation record: the fp32 card's measures another path; `abdoseg validate-fine --card` records this one
    return dataclasses.replace(card, name=f"{card.name}_int8", network_file=network.name,
                               network_sha256=sha256_of(network), provenance=provenance, validation=None)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="abdoseg quantize-fine", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="folder with fine.json and its fine.onnx")
    p.add_argument("--data", type=Path, required=True, help="labelled scans: calibration and gate")
    p.add_argument("--coarse", default="flare21", help="the coarse card the gate's two-stage runs use")
    p.add_argument("--out", type=Path, required=True, help="folder for fine_int8.onnx and fine_int8.json")
    p.add_argument("--margin-mm", type=float, default=None, help="the INT8 card's crop margin (default: fine.json's)")
    args = p.parse_args(argv)
    try:
        path = quantize_fine(args.weights, args.data, args.out, args.coarse, args.margin_mm)
    except (OSError, ValueError) as e:
        print(f"quantize-fine: error: {e}", file=sys.stderr)
        return 2
    print(f"quantize-fine: the gate holds; wrote {path} and {args.out / INT8_NETWORK_FILE}")
    return 0
