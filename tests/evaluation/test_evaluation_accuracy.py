"""FLARE scoring rules, file handling and the ``evaluate`` command."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import surface_distance as sd

from abdoseg.evaluation.accuracy import evaluate_folders, score_case, score_organ
from abdoseg.evaluation.cli import main
from abdoseg.evaluation.labelsets import FLARE21, FLARE22, Organ, get_labelset

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # surface-distance uses old scipy names
FLARE22_TOLERANCES = {1: 5, 2: 3, 3: 3, 4: 5, 5: 2, 6: 2, 7: 2, 8: 2, 9: 2, 10: 3, 11: 5, 12: 7, 13: 3}
ORGAN = {o.label: o for o in FLARE22.organs}


def write_labels(path: Path, array: np.ndarray, spacing=(0.8, 0.8, 2.5), origin=(-100.0, 20.0, 5.0),
                 direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Path:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def box_labels(shape, label: int, z: slice, y: slice = slice(8, 20), x: slice = slice(9, 22)) -> np.ndarray:
    array = np.zeros(shape, dtype=np.uint8)
    array[z, y, x] = label
    return array


# --- label sets ---------------------------------------------------------------------------------------------

def test_labelsets_follow_the_challenges():
    assert [(o.label, o.tolerance_mm) for o in FLARE21.organs] == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0)]
    assert FLARE21.nsd_min_dsc == 0.0
    assert {o.label: o.tolerance_mm for o in FLARE22.organs} == FLARE22_TOLERANCES
    assert {o.name for o in FLARE22.organs if o.gt_slices_only} == {"aorta", "ivc", "esophagus"}
    assert FLARE22.nsd_min_dsc == 0.2
    with pytest.raises(ValueError, match="unknown label set 'flare23'; valid: flare21, flare22"):
        get_labelset("flare23")


# --- FLARE rules, one by one --------------------------------------------------------------------------------

def test_absent_in_both_scores_one_and_in_one_only_scores_zero():
    shape = (12, 30, 30)
    organ = box_labels(shape, 9, slice(2, 8))
    nothing = np.zeros(shape, dtype=np.uint8)
    assert score_organ(nothing, nothing, (2.0, 1.0, 1.0), ORGAN[9], 0.2) == (1.0, 1.0)
    assert score_organ(organ, nothing, (2.0, 1.0, 1.0), ORGAN[9], 0.2) == (0.0, 0.0)
    assert score_organ(nothing, organ, (2.0, 1.0, 1.0), ORGAN[9], 0.2) == (0.0, 0.0)


@pytest.mark.parametrize("label", sorted(FLARE22_TOLERANCES))
def test_flare22_tolerance_per_organ(label):
    """A copy shifted along x by exactly the organ's tolerance has NSD 1; by 1 mm more, NSD < 1."""
    tolerance = FLARE22_TOLERANCES[label]
    gt = box_labels((10, 30, 40), label, slice(2, 8), x=slice(8, 26))
    spacing = (2.0, 1.0, 1.0)
    within = score_case(gt, np.roll(gt, tolerance, axis=2), spacing, FLARE22)[label - 1]
    beyond = score_case(gt, np.roll(gt, tolerance + 1, axis=2), spacing, FLARE22)[label - 1]
    assert within[1] == pytest.approx(1.0, abs=1e-12)
    assert beyond[1] < 1.0
    assert beyond[0] >= 0.2  # the NSD rule for low DSC does not interfere


def test_flare21_tolerance_is_one_mm_for_every_organ():
    for organ in FLARE21.organs:
        gt = box_labels((10, 30, 30), organ.label, slice(2, 8))
        one_mm = np.roll(gt, 1, axis=2)
        assert score_organ(gt, one_mm, (2.0, 1.0, 1.0), organ)[1] == pytest.approx(1.0, abs=1e-12)
        assert score_organ(gt, np.roll(gt, 2, axis=2), (2.0, 1.0, 1.0), organ)[1] < 1.0


def test_flare22_nsd_is_zero_below_dsc_0_2_only():
    """Slabs offset in z: DSC = 2·overlap/(2·10); NSD with 7 mm tolerance would be high."""
    shape = (40, 30, 30)
    gt = box_labels(shape, 12, slice(5, 15))
    spacing = (0.5, 1.0, 1.0)
    low = box_labels(shape, 12, slice(14, 24))  # overlap 1 slice: DSC 0.1
    at_limit = box_labels(shape, 12, slice(13, 23))  # overlap 2 slices: DSC 0.2
    dsc_low, nsd_low = score_case(gt, low, spacing, FLARE22)[11]
    assert dsc_low == pytest.approx(0.1)
    assert nsd_low == 0.0
    assert score_organ(gt, low, spacing, ORGAN[12], nsd_min_dsc=0.0)[1] > 0.5  # the rule, not the geometry
    dsc_limit, nsd_limit = score_case(gt, at_limit, spacing, FLARE22)[11]
    assert dsc_limit == pytest.approx(0.2)
    assert nsd_limit > 0.5
    # FLARE21 has no such rule.
    flare21_gt, flare21_low = (np.where(a == 12, 4, 0).astype(np.uint8) for a in (gt, low))
    assert score_case(flare21_gt, flare21_low, spacing, FLARE21)[3][1] > 0.0


@pytest.mark.parametrize("label", [5, 6, 10])
def test_aorta_ivc_esophagus_scored_on_gt_slices_only(label):
    shape = (40, 30, 30)
    gt = box_labels(shape, label, slice(10, 20))
    longer = box_labels(shape, label, slice(0, 40))  # prediction runs past the GT's slices both ways
    spacing = (2.0, 1.0, 1.0)
    assert score_case(gt, longer, spacing, FLARE22)[label - 1] == (1.0, 1.0)
    # The same shapes for an organ scored on the whole volume lose DSC and NSD.
    as_gallbladder = score_case(np.where(gt, 9, 0), np.where(longer, 9, 0), spacing, FLARE22)[8]
    assert as_gallbladder[0] == pytest.approx(0.4) and as_gallbladder[1] < 1.0
    # The top GT slice is scored (inclusive extent): missing it costs DSC.
    short = box_labels(shape, label, slice(10, 19))
    assert score_case(gt, short, spacing, FLARE22)[label - 1][0] == pytest.approx(2 * 9 / 19)
    # Present elsewhere but not on the GT's slices: 0.
    elsewhere = box_labels(shape, label, slice(25, 35))
    assert score_case(gt, elsewhere, spacing, FLARE22)[label - 1] == (0.0, 0.0)


def test_score_case_agrees_with_reference_on_full_arrays():
    """Cropping to boxes changes nothing: compare with surface-distance on whole masks (GT slab for 5, 6, 10)."""
    rng = np.random.default_rng(11)
    shape = (24, 40, 36)
    spacing = (2.5, 0.7, 0.9)
    gt = np.zeros(shape, dtype=np.uint8)
    pred = np.zeros(shape, dtype=np.uint8)
    for label in range(1, 14):
        z0, y0, x0 = rng.integers(0, 12), rng.integers(0, 25), rng.integers(0, 22)
        dz, dy, dx = rng.integers(3, 10, size=3)
        gt[z0:z0 + dz, y0:y0 + dy, x0:x0 + dx] = label
        sz, sy, sx = rng.integers(-2, 3, size=3)
        pred[max(z0 + sz, 0):z0 + sz + dz, max(y0 + sy, 0):y0 + sy + dy, max(x0 + sx, 0):x0 + sx + dx] = label
    ours = score_case(gt, pred, spacing, FLARE22)
    compared = []
    for organ, (dsc, nsd) in zip(FLARE22.organs, ours):
        g, p = gt == organ.label, pred == organ.label
        if not g.any() or not p.any():
            continue
        compared.append(organ.name)
        if organ.gt_slices_only:
            z = np.nonzero(g.any(axis=(1, 2)))[0]
            g, p = g[z[0]:z[-1] + 1], p[z[0]:z[-1] + 1]
        ref_dsc = sd.compute_dice_coefficient(g, p)
        ref_nsd = sd.compute_surface_dice_at_tolerance(sd.compute_surface_distances(g, p, spacing),
                                                       organ.tolerance_mm) if ref_dsc >= 0.2 else 0.0
        assert abs(dsc - ref_dsc) < 1e-6 and abs(nsd - ref_nsd) < 1e-6, organ.name
    assert {"aorta", "ivc", "esophagus"} <= set(compared) and len(compared) >= 10


# --- files and folders --------------------------------------------------------------------------------------

def test_spacing_is_taken_in_array_order(tmp_path):
    """GT spacing (x, y, z) = (1, 1, 5): a 1-voxel shift along x is 1 mm (NSD 1), along z 5 mm (NSD < 1)."""
    gt = box_labels((12, 30, 30), 1, slice(3, 9))
    write_labels(tmp_path / "gt" / "a.nii.gz", gt, spacing=(1.0, 1.0, 5.0))
    write_labels(tmp_path / "x" / "a.nii.gz", np.roll(gt, 1, axis=2), spacing=(1.0, 1.0, 5.0))
    write_labels(tmp_path / "z" / "a.nii.gz", np.roll(gt, 1, axis=0), spacing=(1.0, 1.0, 5.0))
    along_x = next(evaluate_folders(tmp_path / "x", tmp_path / "gt", FLARE21)).scores[0]
    along_z = next(evaluate_folders(tmp_path / "z", tmp_path / "gt", FLARE21)).scores[0]
    assert along_x.nsd == pytest.approx(1.0, abs=1e-12)
    assert along_z.nsd < 0.9


@pytest.mark.parametrize("change, reason", [
    ({"spacing": (0.8, 0.8, 3.0)}, "spacing"),
    ({"origin": (-100.0, 20.0, 6.0)}, "origin"),
    ({"direction": (-1, 0, 0, 0, -1, 0, 0, 0, 1)}, "direction"),
    ({"shape": (10, 30, 31)}, "size"),
])
def test_grid_mismatch_is_an_error_for_that_case_only(tmp_path, change, reason):
    gt = box_labels((10, 30, 30), 1, slice(2, 8))
    write_labels(tmp_path / "gt" / "bad.nii.gz", gt)
    write_labels(tmp_path / "gt" / "good.nii.gz", gt)
    pred = box_labels(change.pop("shape", (10, 30, 30)), 1, slice(2, 8))
    write_labels(tmp_path / "pred" / "bad.nii.gz", pred, **change)
    write_labels(tmp_path / "pred" / "good.nii.gz", gt)
    bad, good = evaluate_folders(tmp_path / "pred", tmp_path / "gt", FLARE21)
    assert bad.message.startswith(str(tmp_path / "pred" / "bad.nii.gz"))
    assert f"not on the ground truth's grid: {reason}" in bad.message and "\n" not in bad.message
    assert all(math.isnan(s.dsc) and math.isnan(s.nsd) and s.status == "error" for s in bad.scores)
    assert good.message is None and all(s.dsc == 1.0 and s.nsd == 1.0 for s in good.scores)


def test_missing_prediction_scores_zero_and_unreadable_is_an_error(tmp_path):
    gt = box_labels((10, 30, 30), 1, slice(2, 8))
    for name in ("a", "b", "c"):
        write_labels(tmp_path / "gt" / f"{name}.nii.gz", gt)
    write_labels(tmp_path / "pred" / "a.nii.gz", gt)
    (tmp_path / "pred" / "c.nii.gz").write_bytes(b"not a nifti")
    a, b, c = evaluate_folders(tmp_path / "pred", tmp_path / "gt", FLARE22)
    assert [s.dsc for s in a.scores][:2] == [1.0, 1.0]
    assert b.message == f"{tmp_path / 'pred' / 'b.nii.gz'}: missing prediction, scored 0"
    assert len(b.scores) == 13 and all(s.dsc == 0.0 and s.nsd == 0.0 and s.status == "missing" for s in b.scores)
    assert "cannot read image" in c.message and str(tmp_path / "pred" / "c.nii.gz") in c.message
    assert all(math.isnan(s.dsc) for s in c.scores)


def test_evaluate_command_writes_csv_summary_and_plots(tmp_path, capsys):
    gt = box_labels((10, 30, 30), 1, slice(2, 8))
    gt[3:6, 22:26, 22:27] = 3
    write_labels(tmp_path / "gt" / "case_1.nii.gz", gt)
    write_labels(tmp_path / "gt" / "case_2.nii.gz", gt)
    write_labels(tmp_path / "pred" / "case_1.nii.gz", np.roll(gt, 1, axis=1))
    write_labels(tmp_path / "pred" / "case_2.nii.gz", gt, spacing=(0.8, 0.8, 2.0))
    write_labels(tmp_path / "pred" / "extra.nii.gz", gt)
    out = tmp_path / "scores.csv"
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--out", str(out), "--plot", str(tmp_path / "box")])
    captured = capsys.readouterr()
    assert code == 1  # case_2 is on another grid
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["case", "label", "organ", "dsc", "nsd", "status"]
    assert [(r["case"], r["label"], r["organ"]) for r in rows[:4]] == [
        ("case_1", "1", "liver"), ("case_1", "2", "kidneys"), ("case_1", "3", "spleen"), ("case_1", "4", "pancreas")]
    assert len(rows) == 8 and {r["status"] for r in rows[4:]} == {"error"}
    assert float(rows[1]["dsc"]) == 1.0 and 0 < float(rows[0]["dsc"]) < 1
    assert "case_2.nii.gz: not on the ground truth's grid: spacing" in captured.err
    assert "extra.nii.gz: no ground truth" in captured.err
    table = captured.out.splitlines()
    assert table[0] == "flare21: 2 cases, 0 missing (scored 0), 1 with errors"
    assert table[1].split() == ["organ", "n", "dsc_mean", "dsc_std", "dsc_median",
                                  "nsd_mean", "nsd_std", "nsd_median"]
    assert table[3].split()[:3] == ["liver", "1", f"{float(rows[0]['dsc']):.4f}"]
    assert (tmp_path / "box_dsc.png").stat().st_size > 1000 and (tmp_path / "box_nsd.png").stat().st_size > 1000


def test_evaluate_command_rejects_a_missing_folder(tmp_path, capsys):
    assert main(["evaluate", "--pred", str(tmp_path), "--gt", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: not a directory"


def test_organ_tolerance_dataclass_is_used(tmp_path):
    """A custom organ's tolerance changes NSD; guards against a hard-coded tolerance."""
    gt = box_labels((10, 30, 30), 1, slice(2, 8))
    shifted = np.roll(gt, 2, axis=2)
    strict, loose = Organ(1, "x", 1.0), Organ(1, "x", 2.0)
    assert score_organ(gt, shifted, (1.0, 1.0, 1.0), strict)[1] < 1.0
    assert score_organ(gt, shifted, (1.0, 1.0, 1.0), loose)[1] == pytest.approx(1.0)
