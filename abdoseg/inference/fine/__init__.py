"""The fine stage: crop around the coarse organs, segment the crop at a fine spacing, paste back.

Two runners with one `run(ct, spacing, coarse)`: `FineGraphStage` (the card's ONNX graph in OpenVINO or onnxruntime,
no torch; the CPU path) and `FineStage` (torch; the CUDA path). `open_fine_stage` picks by device. Importing this
package does not import torch: torch loads inside `FineStage.load` / `FineStage.run` and in the torch-only modules
(preprocess, sliding, slabs), which only those methods and the training code import.
"""
from __future__ import annotations

from pathlib import Path

from abdoseg.inference.fine.card import FineCard, load_fine_card
from abdoseg.inference.fine.crop import CropBox, organ_box, paste
from abdoseg.inference.fine.graph_stage import FineGraphStage
from abdoseg.inference.fine.stage import FineStage, fine_available, fine_weights_missing
from abdoseg.inference.graph.runtime import RuntimeName

__all__ = ["CropBox", "FineCard", "FineGraphStage", "FineStage", "fine_available", "fine_weights_missing",
           "load_fine_card", "open_fine_stage", "organ_box", "paste"]


def open_fine_stage(card: Path, device: str, runtime: RuntimeName = "openvino", threads: int = 1,
                    cache_dir: Path | None = None) -> FineStage | FineGraphStage:
    """The fine stage of the fine card `card`: torch on `device` "cuda" (its weights file), else its ONNX graph in
    the CPU `runtime`."""
    if str(device).startswith("cuda"):
        return FineStage.load(card, device)
    return FineGraphStage.load(card, runtime, threads, cache_dir)
