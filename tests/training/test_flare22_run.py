"""A FLARE22 (13-organ) run end to end on the bundled scans: train, export with the parity gate, segment."""
import json
from pathlib import Path

import numpy as np
import pytest

from abdoseg.inference.card import Geometry, load_card
from abdoseg.inference.labels import label_map
from abdoseg.inference.pipeline import Predictor, StageClock
from abdoseg.training.export import export_run
from abdoseg.training.train import TrainConfig, train
from tests.helpers import CASES, DATA, real_image


def flare22_folder(root: Path) -> Path:
    """A FLARE folder: the FLARE21 images beside the FLARE22 labels of the same scans (symlinks)."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for case in CASES:
        (root / "imagesTr" / f"{case}_0000.nii.gz").symlink_to(real_image(case))
        (root / "labelsTr" / f"{case}.nii.gz").symlink_to(DATA / "flare22" / "labelsTr" / f"{case}.nii.gz")
    return root


@pytest.fixture(scope="module")
def flare22_export(tmp_path_factory):
    data = flare22_folder(tmp_path_factory.mktemp("flare22"))
    run = tmp_path_factory.mktemp("run22")
    cfg = TrainConfig(data=str(data), geometry=Geometry("resize", (32, 64, 64)), iters_per_epoch=4, crop=(16, 32, 32),
                      batch_size=2, seed=3, threads=2, epochs=2, labelset="flare22")
    train(cfg, run, progress=False)
    return run, export_run(run, tmp_path_factory.mktemp("weights"), name="quick22", recipe="pytest")


@pytest.mark.slow
def test_the_run_validates_every_flare22_organ(flare22_export):
    run, _ = flare22_export
    record = json.loads((run / "train_log.jsonl").read_text().splitlines()[-1])
    assert list(record["val_dice"]) == list(label_map("flare22").organs.values())


@pytest.mark.slow
def test_the_export_is_a_flare22_card_and_segments_flare22_labels(flare22_export):
    _, (onnx_path, card_path) = flare22_export
    card, _ = load_card(card_path)
    assert card.labelset == "flare22" and card.class_to_label == (0, 0, *range(1, 14))
    assert card.keep_components == label_map("flare22").keep_components
    assert "FLARE22" in card.provenance["training_data"]["source"]
    predictor = Predictor.load(card_path, runtime="onnxruntime", threads=1)
    clock = StageClock()
    import SimpleITK as sitk

    labels = predictor.segment_image(sitk.ReadImage(str(real_image(CASES[0]))), clock)
    assert labels.max() <= 13
    present = [int(k) for k in np.unique(labels) if k]
    assert clock.organs_found == [label_map("flare22").names[k] for k in present]
