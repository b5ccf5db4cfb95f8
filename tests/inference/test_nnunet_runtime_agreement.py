"""Agreement with nnU-Net itself: nnUNetPredictor and `abdoseg predict` on the same model folder, folds and scans
(the two bundled scans and a copy stored flipped), mirroring off, and with --tta against nnU-Net's mirroring.
Targets: voxel agreement >= 99.5 % and per-label DSC between the two label maps >= 0.98.

Needs nnunetv2 and torch (the nnU-Net environment) and the test model folders in tests/data/nnunet."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("nnunetv2")

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "tests" / "data" / "nnunet" / "Dataset501_FLARE21Pair"
SCANS = sorted((ROOT / "tests" / "data" / "flare21" / "imagesTr").glob("*_0000.nii.gz"))


def _folder(configuration: str) -> Path:
    folder = MODELS / f"nnUNetTrainer__nnUNetTinyPlans__{configuration}"
    if not (folder / "plans.json").is_file():
        pytest.skip(f"no test model folder {folder.name}")
    return folder


def _scans(tmp_path: Path) -> list[Path]:
    """The bundled scans, and the first stored flipped along x and z (same patient space, other array order)."""
    flipped = tmp_path / "flipped" / SCANS[0].name
    flipped.parent.mkdir()
    sitk.WriteImage(sitk.Flip(sitk.ReadImage(str(SCANS[0])), [True, False, True]), str(flipped))
    return [*SCANS, flipped]


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

    folder = _folder(configuration)
    folds = sorted(int(p.name.split("_")[1]) for p in folder.glob("fold_*"))
    card = import_card(folder, tmp_path / "cards" / configuration)
    predictor = Predictor.load(card, runtime="openvino", threads=2, tta=tta)
    for scan in _scans(tmp_path):
        theirs = nnunet_labels(folder, scan, folds, tta, tmp_path / "nnunet" / scan.parent.name)
        ours = predictor.segment_image(sitk.ReadImage(str(scan)))
        _assert_agree(ours, theirs, f"{configuration} {scan.parent.name}/{scan.name} tta={tta}")
