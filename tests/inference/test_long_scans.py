"""Long scans end to end on the real scan: abdpelvis3mm extended with its own mirrored organ-free slices
to chest-abdomen-pelvis and whole-body lengths (abdoseg.training.long_scans), organs at the top, bottom or middle, one
re-stored in other orientations; the shipped weights and the COBRA peer through the `cobra` preset must score as
on the abdomen-only scan, and a scan without organs must come out empty and say so."""
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.evaluation.metrics import dice
from abdoseg.inference.pipeline import Predictor, StageClock
from abdoseg.training.long_scans import long_scan, organ_free_scan
from tests.helpers import ROOT, SHARED, real_image, real_label

PEER = SHARED / "peers" / "cobra" / "cobra_abdomenct1k.onnx"
ORGANS = {1: "liver", 2: "kidneys", 3: "spleen", 4: "pancreas"}
#: (mm below, mm above): organs at the top (636 mm), bottom, middle; whole body; 2,000 mm
TOP, BOTTOM, MIDDLE, WHOLE, LONGEST = (300, 0), (0, 300), (225, 225), (525, 525), (1664, 0)


def _scores(predictor: Predictor, image, label) -> tuple[dict[str, float], StageClock]:
    clock = StageClock()
    pred = predictor.segment_image(image, clock)
    assert pred.shape == sitk.GetArrayViewFromImage(image).shape
    gt = sitk.GetArrayViewFromImage(label)
    return {name: dice(gt == k, pred == k) for k, name in ORGANS.items()}, clock


@pytest.fixture(scope="module")
def scan():
    return sitk.ReadImage(str(real_image("abdpelvis3mm"))), sitk.ReadImage(str(real_label("abdpelvis3mm")))


@pytest.fixture(scope="module")
def shipped():
    """The coarse card the locate stage hands its region to: these tolerances are its own. The default two-stage
    card runs on a long scan through the command below (test_the_located_range_is_in_the_case_line_and_the_log)."""
    return Predictor.load("flare21", runtime="openvino", threads=2)


@pytest.fixture(scope="module")
def peer():
    if not PEER.exists():
        pytest.skip(f"peer file not found at {PEER} (the shared folder beside the repo)")
    return Predictor.load("cobra", PEER, runtime="openvino", threads=2)


def _assert_close(long: dict, reference: dict, tolerance: float = 0.02) -> None:
    for organ, value in reference.items():
        if np.isnan(value):
            continue
        assert abs(long[organ] - value) <= tolerance, (organ, long[organ], value)


#: Organs at the bottom or in the middle: the only filler here is pelvis, so these variants put mirrored pelvic
#: slices directly on top of a liver and a spleen cut mid-organ, an anatomy no scan has. The fine-tuned weights lift
#: the spleen there from .71 to .86 but not to within 0.02 of the abdomen (docs/pipeline.md, long scans): the whole
#: shortfall lies within 15 mm of that seam (the test below scores the rest); strict, so a fix shows.
_SYNTHETIC_JUNCTION = pytest.mark.xfail(strict=True, reason="pelvis mirrored directly above a liver cut mid-organ")


@pytest.mark.slow
@pytest.mark.parametrize("extension", [TOP, pytest.param(BOTTOM, marks=_SYNTHETIC_JUNCTION),
                                       pytest.param(MIDDLE, marks=_SYNTHETIC_JUNCTION),
                                       pytest.param(WHOLE, marks=_SYNTHETIC_JUNCTION), LONGEST],
                         ids=["top", "bottom", "middle", "whole", "2000mm"])
def test_shipped_weights_score_on_long_scans_as_on_the_abdomen(shipped, scan, extension):
    reference, _ = _scores(shipped, *scan)
    image, label = long_scan(*scan, *extension)
    scores, clock = _scores(shipped, image, label)
    _assert_close(scores, reference)
    assert "locate" in clock.details and clock.organs_found


def _scores_below(predictor: Predictor, image, label, stop: int) -> dict[str, float]:
    """DSC on the stored (RAS: z = slice axis, head last) slices below `stop` only."""
    pred = predictor.segment_image(image)[:stop]
    gt = sitk.GetArrayViewFromImage(label)[:stop]
    return {name: dice(gt == k, pred == k) for k, name in ORGANS.items()}


@pytest.mark.slow
@pytest.mark.parametrize("extension", [BOTTOM, MIDDLE, WHOLE], ids=["bottom", "middle", "whole"])
def test_away_from_the_synthetic_seam_long_scans_score_as_the_abdomen(shipped, scan, extension):
    """What the xfails above miss lies within 15 mm of the seam (benchmarks/bench_long_scans.py seam): slices
    further from it score as the same slices of the abdomen-only scan."""
    n = sitk.GetArrayViewFromImage(scan[0]).shape[0]  # 112 slices of 3 mm
    reference = _scores_below(shipped, *scan, n - 5)
    image, label = long_scan(*scan, *extension)
    _assert_close(_scores_below(shipped, image, label, extension[0] // 3 + n - 5), reference)


@pytest.mark.parametrize("extension", [TOP, BOTTOM, MIDDLE, WHOLE, LONGEST], ids=["top", "bottom", "middle", "whole", "2000mm"])
def test_the_located_region_holds_every_organ_slice(shipped, scan, extension):
    image, label = long_scan(*scan, *extension)
    _, clock = _scores(shipped, image, label)
    organs = np.flatnonzero(sitk.GetArrayViewFromImage(label).any(axis=(1, 2)))  # stored RAS: z is the slice axis
    lo, hi = clock.details["locate"]["organs"]["slices"]
    assert lo <= organs[0] and organs[-1] < hi and hi - lo <= organs[-1] - organs[0] + 1 + 2 * 15  # margin 30 mm + a coarse slice


@pytest.mark.slow
@pytest.mark.parametrize("extension", [TOP, LONGEST], ids=["top", "2000mm"])
def test_cobra_peer_scores_on_long_scans_as_on_the_abdomen(peer, scan, extension):
    """The peer resizes the located region (not the whole scan), so its organs keep their size on the grid."""
    reference, _ = _scores(peer, *scan)
    image, label = long_scan(*scan, *extension)
    scores, clock = _scores(peer, image, label)
    _assert_close({k: v for k, v in scores.items() if k != "pancreas"}, {k: v for k, v in reference.items() if k != "pancreas"})
    assert scores["pancreas"] >= reference["pancreas"] - 0.02
    assert "locate" in clock.details


@pytest.mark.parametrize("code", ["LPS", "PIR"])
def test_a_long_scan_restored_in_another_orientation_scores_the_same(shipped, scan, code):
    image, label = long_scan(*scan, *TOP)
    reference, clock = _scores(shipped, image, label)
    scores, clock2 = _scores(shipped, sitk.DICOMOrient(image, code), sitk.DICOMOrient(label, code))
    assert scores == pytest.approx(reference, abs=1e-9, nan_ok=True)
    assert clock2.details["locate"]["organs"] == clock.details["locate"]["organs"]


@pytest.mark.slow
@pytest.mark.parametrize("extra_mm", [0, 900], ids=["short", "1100mm"])
def test_a_scan_without_organs_is_written_empty_and_says_so(scan, tmp_path, extra_mm):
    image, label = organ_free_scan(*scan)
    if extra_mm:
        image, label = long_scan(image, label, 0, extra_mm)
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    sitk.WriteImage(image, str(inputs / "pelvis_0000.nii.gz"))
    log = tmp_path / "log.jsonl"
    run = subprocess.run([sys.executable, "-m", "abdoseg", "predict", "-i", str(inputs), "-o", str(outputs),
                          "--log", str(log), "--threads", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = sitk.ReadImage(str(outputs / "pelvis.nii.gz"))
    assert out.GetSize() == image.GetSize() and not sitk.GetArrayViewFromImage(out).any()
    line = next(ln for ln in run.stderr.splitlines() if ln.startswith("pelvis:"))
    assert "no organs found" in line
    record = json.loads(log.read_text().splitlines()[0])
    assert record["status"] == "ok" and record["organs_found"] == []
    assert ("locate" in record) == bool(extra_mm)


@pytest.mark.slow
def test_the_located_range_is_in_the_case_line_and_the_log(scan, tmp_path):
    image, _ = long_scan(*scan, *TOP)
    inputs = tmp_path / "in"
    inputs.mkdir()
    sitk.WriteImage(image, str(inputs / "cap_0000.nii.gz"))
    log = tmp_path / "log.jsonl"
    run = subprocess.run([sys.executable, "-m", "abdoseg", "predict", "-i", str(inputs), "-o", str(tmp_path / "out"),
                          "--log", str(log), "--threads", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    record = json.loads(log.read_text().splitlines()[0])
    lo, hi = record["locate"]["organs"]["mm"]
    assert 300 <= lo < hi <= 636 + 1e-6 and record["locate"]["scan_mm"] == 636.0
    assert record["organs_found"] == ["liver", "kidneys", "spleen", "pancreas"] and "locate" in record["seconds"]
    line = next(ln for ln in run.stderr.splitlines() if ln.startswith("cap:"))
    assert f"located z {lo:.0f}-{hi:.0f} mm" in line and "of 636 mm" in line


def test_a_one_slice_scan_is_segmented_on_its_grid(shipped, scan):
    """The other end of "any length": one axial slice through the liver (no locate, no crash, its own grid)."""
    image, _ = scan
    one = image[:, :, 100:101]  # stored RAS: the third axis is z; slice 100 cuts the liver
    clock = StageClock()
    labels = shipped.segment_image(one, clock)
    assert labels.shape == (1, *image.GetSize()[1::-1]) and labels.dtype == np.uint8
    assert "locate" not in clock.details and clock.organs_found is not None
