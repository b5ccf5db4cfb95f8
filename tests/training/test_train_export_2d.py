"""The 2D systems: `abdoseg train --arch <2D>` -> `export` (parity gate, "slices" card) -> predict.sh --card.

Tiny widths on 64x64 slices of the two bundled real scans, a few steps: the path, not the accuracy."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.card import load_card
from abdoseg.training.cli import main as training_main
from abdoseg.training.export import ExportError
from tests.helpers import DATA, ROOT, real_image

ARCHS = ("nnunet2d", "vgg13_unet_ds", "hrnet48_ocr")


def _train(arch: str, out: Path) -> Path:
    run = out / arch
    args = ["train", "--arch", arch, "--data", str(DATA / "flare21"), "--out", str(run), "--width", "0.0625",
            "--slice-size", "64", "64", "--steps", "4", "--steps-per-epoch", "2", "--batch-size", "2",
            "--threads", "1", "--slices-per-run", "3"]
    assert training_main(args) == 0
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs2d")
    return {arch: _train(arch, out) for arch in ARCHS}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_a_2d_run_exports_a_slices_card_that_predict_sh_runs(arch, runs, tmp_path):
    run = runs[arch]
    config = json.loads((run / "config.json").read_text())
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert config["kind"] == "slices" and config["arch"] == arch and len(log) == 2
    assert all(np.isfinite(r["loss"]) for r in log) and (run / "best.pt").is_file()
    weights = tmp_path / "weights"
    assert training_main(["export", str(run), "--out", str(weights), "--name", arch]) == 0
    card, model = load_card(weights / f"{arch}.json")
    assert card.geometry.mode == "slices" and card.geometry.shape == (3, 64, 64) and model.is_file()
    assert min(card.provenance["parity"].values()) >= 0.999
    assert (card.zscore is not None) == (arch == "nnunet2d")  # seed 003: nnU-Net's CT clip + z-score
    assert card.provenance["architecture"]["name"] == arch
    if arch == "vgg13_unet_ds":  # seed 002's rule: largest liver, spleen, pancreas; two kidney components
        assert {k: (r.keep, r.extra, r.min_ml) for k, r in card.keep_components.items()} == \
            {1: (1, 0, 0.0), 2: (2, 0, 0.0), 3: (1, 0, 0.0), 4: (1, 0, 0.0)}
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    shutil.copy(real_image("upperabd1mm"), inputs)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run(["sh", "predict.sh", str(inputs), str(outputs), "--card", str(weights / f"{arch}.json"),
                          "--threads", "1"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    written, source = sitk.ReadImage(str(outputs / "upperabd1mm.nii.gz")), sitk.ReadImage(str(real_image("upperabd1mm")))
    assert written.GetSize() == source.GetSize() and written.GetSpacing() == source.GetSpacing()
    assert written.GetOrigin() == source.GetOrigin() and written.GetDirection() == source.GetDirection()
    assert set(np.unique(sitk.GetArrayViewFromImage(written))) <= {0, 1, 2, 3, 4}
    assert sorted(p.name for p in outputs.iterdir()) == ["upperabd1mm.nii.gz"]  # atomic: no temporary left


@pytest.mark.slow
def test_export_writes_nothing_when_parity_fails(runs, tmp_path, monkeypatch):
    import abdoseg.training.slices.export as export_2d

    monkeypatch.setattr(export_2d, "PARITY_MIN", 1.000001)  # no agreement can reach it
    with pytest.raises(ExportError, match="parity failed"):
        export_2d.export_slice_run(runs["nnunet2d"], tmp_path / "w", "nn")
    assert not (tmp_path / "w").exists()


def test_unknown_2d_arch_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        training_main(["train", "--arch", "resnet", "--data", str(DATA / "flare21"), "--out", str(tmp_path / "r")])
    assert e.value.code == 2 and "no 2D recipe" in capsys.readouterr().err


def test_default_inference_batch_is_four_slices():
    from abdoseg.training.slices.train import SliceTrainConfig

    batch = lambda hw, n=None: SliceTrainConfig(data="-", arch="vgg13_unet_ds", slice_size=hw,  # noqa: E731
                                                slices_per_run=n).inference_batch
    assert (batch((512, 512)), batch((128, 128)), batch((512, 512), 3)) == (4, 4, 3)
