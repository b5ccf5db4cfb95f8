"""GPU fine stage: crop around the coarse organs, segment the crop with a 3D U-Net at a fine spacing, paste back.

`FineStage.load(weights_dir, device)` then `stage.run(ct, spacing, coarse)`. Importing this package does not
import torch: torch loads inside `FineStage.load` / `FineStage.run` and in the torch-only modules
(preprocess, network, sliding, slabs), which only those methods and the training code import.
"""
from abdoseg.inference.fine.card import FineCard, load_fine_card
from abdoseg.inference.fine.crop import CropBox, organ_box, paste
from abdoseg.inference.fine.stage import FineStage, fine_available, fine_weights_missing

__all__ = ["CropBox", "FineCard", "FineStage", "fine_available", "fine_weights_missing", "load_fine_card", "organ_box",
           "paste"]
