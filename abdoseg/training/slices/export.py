"""Export a 2D run: one ONNX graph (abdoseg.inference.graph.slice_graph: in-plane resample + intensity + network
+ ArgMax)
and its "slices" model card, after the same parity gate as the 3D export.

Torch side of the parity check: the slice graph's resample in onnxruntime (the training cache path), the torch
intensity (abdoseg.training.slices.data.Intensity, read back from the card's fields), the torch network, argmax. ONNX
side: the composed file through SliceBatches, as the pipeline runs it. Classes must agree on at least PARITY_MIN of
the slice-grid voxels of every scan, or nothing is written.
"""
from __future__ import annotations

import json
import logging
import platform
import shutil
from pathlib import Path

import numpy as np
import torch

from abdoseg.inference.card import Geometry, ModelCard, sha256_of
from abdoseg.networks.onnx_export import OPSET, slices_onnx_bytes
from abdoseg.training.data import find_cases, read_canonical
from abdoseg.training.export import PARITY_MIN, ExportError, Parity
from abdoseg.training.slices.data import Intensity, SliceResampler
from abdoseg.training.slices.train import SliceTrainConfig, load_slice_run, predict_slices

log = logging.getLogger("abdoseg.training.export")
CLASS_TO_LABEL = (0, 1, 2, 3, 4)  # the 2D networks' classes are the FLARE21 labels
#: Seeds whose paper states a component rule: seed 002 keeps the largest liver, spleen and pancreas component
#: and the two largest kidney components. The others get the label set's rule (abdoseg.inference.labels).
COMPONENT_RULES = {"vgg13_unet_ds": {1: 1, 2: 2, 3: 1, 4: 1}}


def slice_card(cfg: SliceTrainConfig, intensity: Intensity, name: str, **fields) -> ModelCard:
    """The run's "slices" card (sha256 and provenance as given)."""
    windows, zscore = intensity.card_fields()
    return ModelCard(name=name, model_file=f"{name}.onnx", sha256=fields.pop("sha256", None), graph="composed",
                     geometry=Geometry("slices", (cfg.inference_batch, *cfg.slice_size)), windows=windows,
                     zscore=zscore, class_to_label=CLASS_TO_LABEL, keep_components=COMPONENT_RULES.get(cfg.arch),
                     network_input="slices",
                     network_output="logits", **fields)


def slice_parity(model: torch.nn.Module, onnx_bytes: bytes, card: ModelCard, data_dir: Path) -> list[Parity]:
    """Torch vs the composed graph (onnxruntime, in the pipeline's batches): class agreement per scan."""
    from abdoseg.inference.graph.runtime import OnnxRuntimeSession
    from abdoseg.inference.graph.slice_graph import SliceBatches

    session = SliceBatches(OnnxRuntimeSession(onnx_bytes, threads=max(1, torch.get_num_threads())),
                           card.geometry.shape[0])
    resampler = SliceResampler(card.geometry.shape[1:])
    intensity = Intensity.from_card(card.windows, card.zscore)  # the card's own figures on the torch side
    results = []
    for case in find_cases(data_dir):
        hu = read_canonical(case)[0]
        onnx_classes = session.run({"ct": np.ascontiguousarray(hu)})
        agreement = float(np.mean(onnx_classes == predict_slices(model, intensity, resampler(hu))))
        results.append(Parity(case.name, agreement))
        log.info("parity %s: %.5f of voxels agree", case.name, agreement)
    return results


def export_slice_run(run_dir: Path, out_dir: Path, name: str, checkpoint: str = "best.pt",
                     parity_data: Path | None = None, recipe: str | None = None) -> tuple[Path, Path]:
    """Write `out_dir/<name>.onnx` and `out_dir/<name>.json` (+ the run's log); return both paths."""
    import onnx

    from abdoseg.inference.graph.slice_graph import compose_slices_with_network

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg, model, intensity, state = load_slice_run(run_dir, checkpoint)
    draft = slice_card(cfg, intensity, name)
    network = onnx.load_from_string(slices_onnx_bytes(model, intensity.n_channels, cfg.slice_size))
    onnx_bytes = compose_slices_with_network(network, draft).SerializeToString()
    parity = slice_parity(model, onnx_bytes, draft, Path(parity_data or cfg.data))
    worst = min(p.agreement for p in parity)
    if worst < PARITY_MIN:
        raise ExportError(f"parity failed: torch and onnxruntime agree on only {worst:.5f} of voxels (< {PARITY_MIN})")
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{name}.onnx"
    tmp = out_dir / f".{name}.onnx.tmp"
    tmp.write_bytes(onnx_bytes)
    tmp.replace(onnx_path)
    card = slice_card(cfg, intensity, name, sha256=sha256_of(onnx_path),
                      provenance=_provenance(cfg, state, run_dir, parity, recipe))
    card_path = out_dir / f"{name}.json"
    tmp = out_dir / f".{name}.json.tmp"
    card.save(tmp)
    tmp.replace(card_path)
    for extra in ("train.log", "train_log.jsonl"):
        if (run_dir / extra).is_file():
            shutil.copyfile(run_dir / extra, out_dir / f"{name}.{extra}")
    log.info("wrote %s and %s (sha256 %s…)", onnx_path, card_path, card.sha256[:12])
    return onnx_path, card_path


def _provenance(cfg: SliceTrainConfig, state: dict, run_dir: Path, parity: list[Parity], recipe: str | None) -> dict:
    history = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line]
    return {
        "warning": "Trained on the two bundled real CT scans (TotalSegmentator pseudo-labels): a path check of "
        "the 2D system, not a clinical model; its scores on its own training scans say nothing about unseen patients.",
        "architecture": {"name": cfg.arch, "seed": cfg.recipe.seed, "width": cfg.width,
                         "parameters": state.get("parameters")},
        "training": {"config": json.loads(cfg.to_json()), "recipe_notes": cfg.recipe.notes,
                     "cases": [c.name for c in find_cases(Path(cfg.data))], "epochs_run": len(history),
                     "best_epoch": state.get("epoch"), "best_validation": state.get("record"),
                     "optimizer_steps": int(sum(h["steps"] for h in history)),
                     "training_wall_time_min": history[-1]["elapsed_min"] if history else None},
        "recipe": recipe,
        "parity": {p.scan: round(p.agreement, 6) for p in parity},
        "exported_with": {"torch": torch.__version__, "python": platform.python_version(), "opset": OPSET},
    }
