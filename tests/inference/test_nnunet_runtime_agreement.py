"""Agreement with nnU-Net itself: nnUNetPredictor and abdoseg on the same model folder, folds and scans (the two
bundled scans and a copy stored flipped), mirroring off; with --tta against nnU-Net's mirroring (on a 32-slice
piece of a scan: mirroring costs nnU-Net 8 network runs a window). Targets: voxel agreement >= 99.5 % and per-label
DSC between the two label maps >= 0.98.

The networks are the test plans' (tests/data/nnunet, nnU-Net's planner and custom plans) with seeded random weights:
the trained test models predict background only on these scans, and an agreement on empty maps could not fail;
random networks give every label and boundaries everywhere, the hardest case for agreement.
Needs nnunetv2 and torch (the nnU-Net environment)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("nnunetv2")

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests" / "data" / "nnunet" / "Dataset501_FLARE21Pair"
SCANS = sorted((ROOT / "tests" / "data" / "flare21" / "imagesTr").glob("*_0000.nii.gz"))


def _random_folder(root: Path, configuration: str, folds) -> Path:
    from tests.helpers.nnunet import random_model_folder

    tiny = MODELS / "nnUNetTrainer__nnUNetTinyPlans__3d_fullres"  # its plans.json holds every configuration
    plans, dataset = (json.loads((tiny / name).read_text()) for name in ("plans.json", "dataset.json"))
    if configuration not in plans["configurations"]:
        pytest.skip(f"no {configuration} in the test plans")
    mirror_axes = (0, 1) if configuration == "2d" else (0, 1, 2)  # nnUNetTrainer's: every axis of the patch
    return random_model_folder(root, plans, configuration, dataset, folds, mirror_axes=mirror_axes)


def _scans(tmp_path: Path, tta: bool) -> list[Path]:
    """The bundled scans and the first stored flipped along x and z (same patient space, other array order); with
    mirroring, 32 slices of the flipped copy."""
    flipped = tmp_path / "flipped" / SCANS[0].name
    flipped.parent.mkdir()
    image = sitk.Flip(sitk.ReadImage(str(SCANS[0])), [True, False, True])
    if tta:
        middle = image.GetSize()[2] // 2
        image = image[:, :, middle - 16:middle + 16]
    sitk.WriteImage(image, str(flipped))
    return [flipped] if tta else [*SCANS, flipped]


def _assert_agree(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    assert ours.shape == theirs.shape
    agreement = float((ours == theirs).mean())
    assert agreement >= 0.995, f"{what}: voxel agreement {agreement:.4f}"
    for k in np.union1d(np.unique(ours), np.unique(theirs)):
        if k == 0:
            continue
        a, b = ours == k, theirs == k
        dsc = 2 * float((a & b).sum()) / float(a.sum() + b.sum())
        assert dsc >= 0.98, f"{what}: label {k} DSC {dsc:.4f}"


@pytest.mark.slow
@pytest.mark.parametrize("configuration", ["3d_fullres", "3d_lowres", "2d"])
@pytest.mark.parametrize("tta", [False, True])
def test_labels_agree_with_nnunet(tmp_path, configuration, tta):
    from abdoseg.inference.pipeline import Predictor
    from tests.helpers.nnunet_reference import import_card, nnunet_labels

    folds = (0, 1) if configuration == "3d_fullres" else (0,)
    folder = _random_folder(tmp_path / "results", configuration, folds)
    card = import_card(folder, tmp_path / "cards" / configuration)
    predictor = Predictor.load(card, runtime="openvino", threads=2, tta=tta)
    for scan in _scans(tmp_path, tta):
        theirs = nnunet_labels(folder, scan, folds, tta, tmp_path / "nnunet" / scan.parent.name)
        assert len(np.unique(theirs)) >= 3  # labels and boundaries to agree on
        ours = predictor.segment_image(sitk.ReadImage(str(scan)))
        _assert_agree(ours, theirs, f"{configuration} {scan.parent.name}/{scan.name} tta={tta}")


@pytest.mark.slow
def test_cascade_second_stage_agrees_with_nnunet(tmp_path):
    """3d_cascade_fullres after 3d_lowres: abdoseg's second stage fed nnU-Net's own coarse labels (the coarse stage is
    held to the targets above; a random second stage amplifies its few differing voxels, one-hot input channels)."""
    from abdoseg.inference.pipeline import Predictor
    from tests.helpers.nnunet_reference import import_card, nnunet_labels

    low = _random_folder(tmp_path / "results", "3d_lowres", (0,))
    cascade = _random_folder(tmp_path / "results", "3d_cascade_fullres", (0,))
    low_card = import_card(low, tmp_path / "cards" / "low")
    card = import_card(cascade, tmp_path / "cards" / "cascade", previous_stage=low_card)
    scan = SCANS[0]
    coarse = nnunet_labels(low, scan, (0,), False, tmp_path / "coarse")
    theirs = nnunet_labels(cascade, scan, (0,), False, tmp_path / "fine", prev_stage=tmp_path / "coarse" / "x")
    assert len(np.unique(theirs)) >= 3
    predictor = Predictor.load(card, runtime="openvino", threads=2)
    fine, _ = predictor.models
    image = sitk.ReadImage(str(scan))
    ours = fine.predict(sitk.GetArrayFromImage(image), image.GetSpacing()[::-1], coarse)
    _assert_agree(ours, theirs, f"3d_cascade_fullres {scan.name}")
