"""The container CI's output checker (.ci/check_outputs.py) on tiny synthetic scans: it passes a correct output
and names each broken contract (grid, pixel type, labels, liver, permissions, stray files, missing output)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SPEC = importlib.util.spec_from_file_location(
    "check_outputs", Path(__file__).resolve().parents[2] / ".ci" / "check_outputs.py")
check_outputs = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(check_outputs)


def _scan(tmp_path: Path) -> tuple[Path, Path, sitk.Image]:
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    ct = sitk.GetImageFromArray(np.full((4, 5, 6), -1000, np.int16))
    ct.SetSpacing((0.8, 0.8, 2.5))
    ct.SetOrigin((-10.0, 20.0, 30.0))
    ct.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    sitk.WriteImage(ct, str(inputs / "case_0000.nii.gz"))
    return inputs, outputs, ct


def _labels(ct: sitk.Image, arr: np.ndarray | None = None, pixel=np.uint8) -> sitk.Image:
    if arr is None:
        arr = np.zeros((4, 5, 6), pixel)
        arr[1:3, 1:4, 1:5] = 1
        arr[0, 0, 0] = 4
    out = sitk.GetImageFromArray(arr.astype(pixel))
    out.CopyInformation(ct)
    return out


def _write(img: sitk.Image, outputs: Path) -> Path:
    path = outputs / "case.nii.gz"
    sitk.WriteImage(img, str(path))
    os.chmod(path, 0o644)
    return path


def test_correct_output_passes(tmp_path, capsys):
    inputs, outputs, ct = _scan(tmp_path)
    _write(_labels(ct), outputs)
    assert check_outputs.main([str(inputs), str(outputs)]) == 0
    assert "case: 6x5x4 labels [0, 1, 4]" in capsys.readouterr().out


@pytest.mark.parametrize("breakage, message", [
    ("spacing", "spacing"), ("origin", "origin"), ("direction", "direction"), ("size", "size"),
    ("int16", "pixel type"), ("label 7", "outside 0..4"), ("no liver", "no liver"),
    ("mode 600", "not readable by other users"), ("stray file", "unexpected files"), ("missing", "no output"),
])
def test_each_broken_contract_fails_with_its_reason(tmp_path, capsys, breakage, message):
    inputs, outputs, ct = _scan(tmp_path)
    out = _labels(ct)
    if breakage == "spacing":
        out.SetSpacing((0.8, 0.8, 2.6))
    elif breakage == "origin":
        out.SetOrigin((-10.0, 20.0, 31.0))
    elif breakage == "direction":
        out.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
    elif breakage == "size":
        out = _labels(ct)[:, :, :3]
    elif breakage == "int16":
        out = _labels(ct, pixel=np.int16)
    elif breakage == "label 7":
        arr = sitk.GetArrayFromImage(out)
        arr[0, 0, 1] = 7
        out = _labels(ct, arr)
    elif breakage == "no liver":
        out = _labels(ct, np.zeros((4, 5, 6), np.uint8))
    if breakage != "missing":
        path = _write(out, outputs)
        if breakage == "mode 600":
            os.chmod(path, 0o600)
    if breakage == "stray file":
        (outputs / "tmp1234.nii.gz").write_bytes(b"")
    assert check_outputs.main([str(inputs), str(outputs)]) == 1
    assert message in capsys.readouterr().err


def test_dice_against_reference_labels(tmp_path, capsys):
    inputs, outputs, ct = _scan(tmp_path)
    _write(_labels(ct), outputs)
    refs = tmp_path / "labels"
    refs.mkdir()
    truth = np.zeros((4, 5, 6), np.uint8)
    truth[1:3, 1:4, 1:3] = 1  # half of the predicted liver: Dice 2*12/(24+12)
    sitk.WriteImage(_labels(ct, truth), str(refs / "case.nii.gz"))
    assert check_outputs.main([str(inputs), str(outputs), "--labels", str(refs)]) == 0
    out = capsys.readouterr().out
    assert "liver 0.667" in out and "kidneys 1.000" in out and "pancreas 0.000" in out
