"""Leave-one-patient-out: the held-out case never enters training, and the run ends with its report."""
import json

import pytest
import SimpleITK as sitk

from abdoseg.training.data import find_cases
from abdoseg.training.held_out import split_held_out
from abdoseg.training.train import TrainConfig, train
from tests.helpers import DATA
from tests.helpers.training import QUICK


def test_split_held_out_names_unknown_cases_and_refuses_an_empty_pool():
    cases = find_cases(DATA / "flare21")
    pool, held = split_held_out(cases, ("upperabd1mm",))
    assert [c.name for c in pool] == ["abdpelvis3mm"] and [c.name for c in held] == ["upperabd1mm"]
    assert split_held_out(cases, ()) == (cases, [])
    with pytest.raises(ValueError, match="no such case; the cases are abdpelvis3mm, upperabd1mm"):
        split_held_out(cases, ("nope",))
    with pytest.raises(ValueError, match="leaves no case to train on"):
        split_held_out(cases, ("abdpelvis3mm", "upperabd1mm"))


def test_config_round_trips_the_held_out_cases():
    cfg = TrainConfig(hold_out=("upperabd1mm",), **QUICK)
    assert TrainConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.slow
def test_held_out_run_never_trains_on_the_case_and_reports_it(tmp_path):
    train(TrainConfig(epochs=1, hold_out=("upperabd1mm",), **{**QUICK, "iters_per_epoch": 2}), tmp_path,
          progress=False)
    cached = [p.name for p in (tmp_path / "cache").iterdir()]
    assert cached and all(name.startswith("abdpelvis3mm.") for name in cached), cached  # training data only

    report = json.loads((tmp_path / "held_out.json").read_text())
    assert report["held_out"] == ["upperabd1mm"] and report["trained_on"] == ["abdpelvis3mm"]
    assert report["optimizer_steps"] == 2 and report["cpu"] and report["torch_threads"] == 2
    assert [o["organ"] for o in report["organs"]] == ["liver", "kidneys", "spleen", "pancreas"]
    for row in report["organs"]:
        assert {"dsc", "nsd", "reference_ml", "predicted_ml", "false_positive_ml"} <= set(row)
    kidneys = report["organs"][1]
    assert kidneys["reference_ml"] == 0.0 and kidneys["false_positive_ml"] == kidneys["predicted_ml"]
    assert report["organs"][0]["reference_ml"] > 500  # the liver of upperabd1mm: ~700 ml
    assert (tmp_path / "held_out.csv").read_text().startswith("case,label,organ,dsc,nsd,reference_ml")

    image = sitk.ReadImage(str(DATA / "flare21" / "imagesTr" / "upperabd1mm_0000.nii.gz"))
    prediction = sitk.ReadImage(str(tmp_path / "held_out" / "upperabd1mm.nii.gz"))
    assert prediction.GetSize() == image.GetSize() and prediction.GetDirection() == image.GetDirection()
    assert prediction.GetSpacing() == image.GetSpacing() and prediction.GetOrigin() == image.GetOrigin()
