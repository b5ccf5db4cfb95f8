"""nnU-Net itself, for agreement tests and the benchmark (needs nnunetv2 and torch: the nnU-Net environment).

- `random_model_folder` (from tests.helpers.nnunet): a results folder with seeded random weights, any plans (a
  full-size one for timing);
- `import_card`: the folder as an nnU-Net card with ONNX per fold, by `abdoseg import-nnunet` (docs/nnunet.md);
- `nnunet_labels`: nnUNetPredictor's label map for a scan file (same folds; mirroring on or off).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np


def import_card(folder: Path, out: Path, previous_stage: Path | None = None) -> Path:
    """The card of nnU-Net results `folder` at out.json (+ out.fold_k.onnx), by `abdoseg import-nnunet`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "abdoseg", "import-nnunet", str(folder), "--out", str(out)]
    if previous_stage is not None:
        cmd += ["--previous-stage", str(previous_stage)]
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    subprocess.run(cmd, check=True, env=env)
    return out.with_suffix(".json")


def nnunet_labels(folder: Path, scan: Path, folds, mirroring: bool, out_dir: Path,
                  prev_stage: Path | None = None) -> np.ndarray:
    """nnUNetPredictor (CPU) on one scan file: its label map in the scan's stored (z, y, x) order (written into
    `out_dir`; `prev_stage`: the previous stage's label map of this scan, for a cascade)."""
    import SimpleITK as sitk
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), tuple(folds), "checkpoint_final.pth")
    out_dir = Path(out_dir)  # a temporary folder: never beside the input
    out_dir.mkdir(parents=True, exist_ok=True)
    seg_dir = None if prev_stage is None else str(Path(prev_stage).parent)  # nnU-Net saves its arguments as JSON
    predictor.predict_from_files_sequential([[str(scan)]], [str(out_dir / Path(scan).name.replace("_0000.nii.gz", ""))],
                                            save_probabilities=False, overwrite=True,
                                            folder_with_segs_from_prev_stage=seg_dir)
    result = out_dir / Path(scan).name.replace("_0000.nii.gz", ".nii.gz")
    return sitk.GetArrayFromImage(sitk.ReadImage(str(result)))
