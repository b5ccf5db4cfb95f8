"""The held-out report's rows: FLARE-rule overlap plus reference, predicted and false-positive volumes."""
import numpy as np
import pytest

from abdoseg.evaluation.accuracy import LabelImage
from abdoseg.evaluation.held_out import format_held_out, score_held_out
from abdoseg.evaluation.labelsets import FLARE21


def _image(array, spacing=(2.0, 1.0, 0.5)):
    return LabelImage(array, array.shape[::-1], spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))


def test_absent_organ_reports_its_false_positive_volume():
    gt = np.zeros((10, 20, 20), np.uint8)
    gt[2:6, 2:10, 2:10] = 1  # liver: 256 voxels of 1 mm³
    pred = gt.copy()
    pred[7:9, 12:17, 12:17] = 2  # kidneys painted where the reference has none: 50 voxels
    rows = {r.organ: r for r in score_held_out("x", _image(gt), _image(pred), FLARE21)}
    assert rows["liver"].dsc == 1.0 and rows["liver"].false_positive_ml == 0.0
    assert rows["liver"].reference_ml == pytest.approx(0.256)
    kidneys = rows["kidneys"]
    assert kidneys.absent and kidneys.dsc == 0.0
    assert kidneys.predicted_ml == kidneys.false_positive_ml == pytest.approx(0.050)
    assert rows["spleen"].absent and rows["spleen"].dsc == 1.0 and rows["spleen"].false_positive_ml == 0.0
    assert "absent" in format_held_out(list(rows.values()))


def test_false_positive_volume_counts_only_voxels_outside_the_reference_organ():
    gt = np.zeros((10, 20, 20), np.uint8)
    gt[2:6, 2:10, 2:10] = 3
    pred = np.zeros_like(gt)
    pred[2:6, 2:10, 6:14] = 3  # half overlaps: 128 voxels outside
    (spleen,) = [r for r in score_held_out("x", _image(gt), _image(pred), FLARE21) if r.organ == "spleen"]
    assert spleen.dsc == pytest.approx(0.5)
    assert spleen.false_positive_ml == pytest.approx(0.128)


def test_a_prediction_off_the_grid_is_refused_with_the_reason():
    gt = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="not on the reference's grid: spacing"):
        score_held_out("x", _image(gt), _image(gt, spacing=(1.0, 1.0, 1.0)), FLARE21)


def test_evaluate_volumes_writes_the_rows_of_the_scored_cases(tmp_path, capsys):
    import csv

    import SimpleITK as sitk

    from abdoseg.evaluation.cli import main

    gt = np.zeros((10, 20, 20), np.uint8)
    gt[2:6, 2:10, 2:10] = 1
    pred = gt.copy()
    pred[7:9, 12:17, 12:17] = 2
    for folder, array in (("gt", gt), ("pred", pred)):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / folder / "case.nii.gz"))
    out = tmp_path / "volumes.csv"
    command = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--volumes", str(out)]
    assert main(command) == 0
    with out.open() as f:
        rows = {r["organ"]: r for r in csv.DictReader(f)}
    assert float(rows["kidneys"]["false_positive_ml"]) == pytest.approx(0.050)
    assert float(rows["liver"]["reference_ml"]) == pytest.approx(0.256)
    assert "absent" in capsys.readouterr().out
