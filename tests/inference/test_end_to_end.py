"""Golden end-to-end runs on the real scans (two levels of tests: the synthetic ones elsewhere, these with Dice).

The peer's published COBRA file runs unchanged through the `cobra` card preset; re-storing the same scan in
another orientation or axis order must not change its Dice (the COBRA pipeline itself drops to 0.005 liver
Dice when the scan is merely stored LPS).
"""

import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.evaluation.metrics import dice
from abdoseg.inference.pipeline import Predictor
from tests.helpers import CASES, SHARED, real_image, real_label

PEER = SHARED / "peers" / "cobra" / "cobra_abdomenct1k.onnx"
ORGANS = {1: "liver", 2: "kidneys", 3: "spleen", 4: "pancreas"}


def organ_dice(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    return {name: dice(gt == label, pred == label) for label, name in ORGANS.items()}


@pytest.fixture(scope="module")
def peer() -> Predictor:
    if not PEER.exists():
        pytest.skip(f"peer file not found at {PEER} (the shared folder beside the repo)")
    return Predictor.load("cobra", PEER, runtime="openvino", threads=2)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_peer_file_is_orientation_invariant_through_the_cobra_card(peer, case):
    image, label = sitk.ReadImage(str(real_image(case))), sitk.ReadImage(str(real_label(case)))
    reference = organ_dice(peer.segment_image(image), sitk.GetArrayFromImage(label))
    assert reference["liver"] > 0.9 and reference["spleen"] > 0.9  # the peer's published quality, not noise
    for code in ("LPS", "PIR", "ASL"):
        restored = sitk.DICOMOrient(image, code)
        pred = peer.segment_image(restored)
        assert pred.shape == sitk.GetArrayViewFromImage(restored).shape
        scores = organ_dice(pred, sitk.GetArrayFromImage(sitk.DICOMOrient(label, code)))
        for organ, value in scores.items():
            assert abs(value - reference[organ]) <= 0.01, (case, code, organ, value, reference[organ])
