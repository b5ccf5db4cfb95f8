"""Export a training run as the shipped artefact: one ONNX graph (preprocessing + network + ArgMax, dynamic
input size) and its model card, after a parity check of torch against onnxruntime on real scans.

Torch side of the parity check: the inference resample graph in onnxruntime (the training cache path), the
torch window twin, the torch network, argmax. ONNX side: the composed file alone. Labels must agree on at
least `PARITY_MIN` of the model-grid voxels of every scan, or the export fails and nothing is written.
"""
from __future__ import annotations

import io
import json
import logging
import platform
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from abdoseg.inference.card import ModelCard, sha256_of
from abdoseg.inference.graph.staged import slab_agreement
from abdoseg.networks.cobra_unet import SLAB_TAIL, CobraUNet, count_parameters
from abdoseg.training.data import FULL, UPPER60, Crop, Resampler, find_cases, read_canonical
from abdoseg.training.train import TrainConfig, build_network, network_classes
from abdoseg.training.windows import hu_to_channels

log = logging.getLogger("abdoseg.training.export")
PARITY_MIN = 0.999
OPSET = 17


class ExportError(ValueError):
    """The export cannot be trusted (parity failed, run folder incomplete)."""


@dataclass(frozen=True)
class Parity:
    """Share of model-grid voxels whose class agrees between torch and onnxruntime, for one scan."""

    scan: str
    agreement: float


def load_run(run_dir: Path, checkpoint: str = "best.pt") -> tuple[TrainConfig, CobraUNet, dict]:
    """(config, network in eval mode, checkpoint record) of a run folder."""
    run_dir = Path(run_dir)
    for needed in ("config.json", checkpoint):
        if not (run_dir / needed).is_file():
            raise ExportError(f"{run_dir / needed}: missing; is {run_dir} a training run folder?")
    cfg = TrainConfig.from_json((run_dir / "config.json").read_text())
    state = torch.load(run_dir / checkpoint, map_location="cpu", weights_only=False)
    model = build_network(cfg.labelset, deep_supervision=cfg.deep_supervision)
    model.load_state_dict(state["model"])
    return cfg, model.eval(), state


def network_onnx(model: CobraUNet, shape: tuple[int, int, int]) -> "onnx.ModelProto":  # noqa: F821
    """The bare network as ONNX: "img" [1, 2, *shape] -> "output" [1, classes, *shape] (BatchNorm folded)."""
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        torch.onnx.export(
            model.eval(), (torch.zeros(1, 2, *shape),), buffer, input_names=["img"], output_names=["output"],
            opset_version=OPSET, dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def torch_classes(model: CobraUNet, resampler: Resampler, hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Model-grid classes the torch way (resample graph in onnxruntime, torch windows, torch network)."""
    low = torch.from_numpy(resampler(hu, spacing))
    with torch.no_grad():
        return model(hu_to_channels(low)[None]).argmax(1)[0].numpy().astype(np.uint8)


def parity_check(
    model: CobraUNet, onnx_bytes: bytes, cfg: TrainConfig, data_dir: Path, crops: tuple[Crop, ...] = (FULL, UPPER60)
) -> list[Parity]:
    """Torch vs onnxruntime class agreement on every case × crop of `data_dir`."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    resampler = Resampler(cfg.geometry)
    results = []
    for case in find_cases(data_dir):
        hu_full, _, spacing = read_canonical(case, labelset=cfg.labelset)
        for crop in crops:
            hu = np.ascontiguousarray(hu_full[crop.slices(hu_full.shape)])
            feeds = {"ct": hu}
            if cfg.geometry.mode == "spacing":
                feeds["spacing"] = np.asarray(spacing, np.float32)
            onnx_classes = session.run(["classes"], feeds)[0]
            agreement = float(np.mean(onnx_classes == torch_classes(model, resampler, hu, spacing)))
            results.append(Parity(f"{case.name}/{crop.name}", agreement))
            log.info("parity %s/%s: %.5f of voxels agree", case.name, crop.name, agreement)
    return results


def _existing_locator(card_path: Path):
    """The locator section of the card being replaced (the locator is trained and exported on its own)."""
    if not card_path.is_file():
        return None
    return ModelCard.from_dict(json.loads(card_path.read_text())).locator


def export_run(
    run_dir: Path,
    out_dir: Path,
    name: str = "abdoseg_coarse",
    checkpoint: str = "best.pt",
    parity_data: Path | None = None,
    recipe: str | None = None,
) -> tuple[Path, Path]:
    """Write `out_dir/<name>.onnx` and `out_dir/<name>.json` (+ the run's log and curves); return both paths."""
    from abdoseg.inference.graph.preprocess_graph import compose_with_network

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg, model, state = load_run(run_dir, checkpoint)
    class_to_label = (0, *range(network_classes(cfg.labelset) - 1))  # air, body -> 0; class c -> label c - 1
    draft = ModelCard(name=name, model_file=f"{name}.onnx", sha256=None, graph="composed", geometry=cfg.geometry,
                      class_to_label=class_to_label, labelset=cfg.labelset)
    composed = compose_with_network(network_onnx(model, cfg.geometry.shape), draft)
    onnx_bytes = composed.SerializeToString()
    parity = parity_check(model, onnx_bytes, cfg, Path(parity_data or cfg.data))
    worst = min(p.agreement for p in parity)
    if worst < PARITY_MIN:
        raise ExportError(f"parity failed: torch and onnxruntime agree on only {worst:.5f} of voxels (< {PARITY_MIN})")
    slabs = slab_agreement(composed, replace(draft, slab_tail=SLAB_TAIL))
    if slabs != 1.0:
        raise ExportError(f"the network in z-slabs (slab_tail {SLAB_TAIL}) agrees with the whole graph on only "
                          f"{slabs:.6f} of voxels (needs 1.0)")

    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{name}.onnx"
    onnx_path.write_bytes(onnx_bytes)
    history = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line]
    record = state.get("record", {})
    provenance = {
        "warning": "Trained on two real CT scans whose labels are TotalSegmentator pseudo-labels. This proves the "
        "training path; it is NOT a clinical model and its scores on its own training scans say nothing about "
        "unseen patients.",
        "training_data": {
            "cases": [c.name for c in find_cases(Path(cfg.data))],
            "source": "TotalSegmentator public test files (wasserth/TotalSegmentator @ 0e65a448, "
            f"tests/reference_files; Apache-2.0); labels are TotalSegmentator outputs remapped to {cfg.labelset.upper()}",
            "validation": "the same two scans (one fold)" if cfg.folds == 1 else f"fold {cfg.fold} of {cfg.folds}",
        },
        "recipe": recipe,
        "seed": cfg.seed,
        "epochs_run": len(history),
        "best_epoch": state.get("epoch"),
        "best_validation": {k: record.get(k) for k in ("val_loss", "val_dice", "val_mean_dice")},
        "optimizer_steps": int(sum(h["steps"] for h in history)),
        "training_wall_time_min": round(history[-1]["elapsed_min"], 2) if history else None,
        "parameters": count_parameters(model),
        "parity": {p.scan: round(p.agreement, 6) for p in parity},
        "exported_with": {"torch": torch.__version__, "python": platform.python_version(), "opset": OPSET},
        "credit": "TotalSegmentator (Wasserthal et al., Radiology: AI 2023) for the labels; COBRA (FLARE21) for "
        "the network layout, re-implemented here",
    }
    card_path = out_dir / f"{name}.json"
    card = ModelCard(name=name, model_file=onnx_path.name, sha256=sha256_of(onnx_path), graph="composed",
                     geometry=cfg.geometry, locator=_existing_locator(card_path), provenance=provenance,
                     class_to_label=class_to_label, labelset=cfg.labelset, slab_tail=SLAB_TAIL)
    card.save(card_path)
    for extra, target in (("train.log", f"{name}.train.log"), ("train_log.jsonl", f"{name}.train_log.jsonl"),
                          ("curves.png", f"{name}.curves.png")):
        if (run_dir / extra).is_file():
            shutil.copyfile(run_dir / extra, out_dir / target)
    log.info("wrote %s and %s (sha256 %s…)", onnx_path, card_path, card.sha256[:12])
    return onnx_path, card_path
