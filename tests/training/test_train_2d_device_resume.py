"""The 2D trainer (`abdoseg train --arch <2D>`): it trains on the device asked for, refuses `cuda` without a GPU,
resumes a stopped run exactly where it stopped, and refuses to resume another architecture's run."""
import json
import logging
from pathlib import Path

import pytest
import torch

import abdoseg.training.slices.train as slices_train
from abdoseg.training.cli import main as training_main
from abdoseg.training.slices.train import SliceTrainConfig
from abdoseg.training.train import TrainConfig
from tests.helpers import DATA

GPU = torch.cuda.is_available()


def _args(arch: str, out: Path, *extra: str) -> list[str]:
    return ["train", "--arch", arch, "--data", str(DATA / "flare21"), "--out", str(out), "--width", "0.0625",
            "--slice-size", "64", "64", "--steps", "4", "--steps-per-epoch", "2", "--batch-size", "2",
            "--threads", "1", *extra]


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def _refusal(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        training_main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("arch", ["nnunet2d", "cobra"])
def test_cuda_without_a_gpu_is_refused_in_one_line(tmp_path, capsys, monkeypatch, arch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = _refusal(_args(arch, tmp_path / "run", "--device", "cuda"), capsys)
    assert "--device cuda" in err and "sees no GPU" in err
    assert not (tmp_path / "run" / "config.json").exists()  # refused before any work


@pytest.mark.slow
@pytest.mark.skipif(GPU, reason="on a GPU machine the CUDA run itself is tested (test_a_2d_run_trains_on_the_gpu)")
def test_a_2d_run_hands_its_network_to_the_device_asked_for(tmp_path, monkeypatch, caplog):
    """Where torch claims a GPU, `--device cuda` reaches torch's CUDA (which this CPU build cannot run): the
    network is not left on the CPU. With `auto` and no GPU the run trains on the CPU and says so."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises((AssertionError, RuntimeError), match="CUDA"):
        training_main(_args("nnunet2d", tmp_path / "cuda", "--device", "cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    caplog.set_level(logging.INFO, logger="training")
    assert training_main(_args("nnunet2d", tmp_path / "auto", "--device", "auto", "--steps", "2")) == 0
    assert "width 0.0625 on cpu" in caplog.text
    assert SliceTrainConfig.from_json((tmp_path / "auto" / "config.json").read_text()).device == "auto"


@pytest.mark.skipif(not GPU, reason="needs a GPU")
def test_a_2d_run_trains_on_the_gpu(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="training")
    assert training_main(_args("hrnet48_ocr", tmp_path / "run", "--device", "cuda", "--steps", "2")) == 0
    assert "width 0.0625 on cuda" in caplog.text
    state = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert state["cuda_rng"] is not None and len(_log(tmp_path / "run")) == 1


@pytest.mark.slow
def test_a_stopped_2d_run_resumes_exactly_where_it_stopped(tmp_path, monkeypatch):
    """A run killed in its second epoch, resumed with --resume, ends with the same weights, optimiser state and log
    as the run that never stopped (hrnet48_ocr: its dropout draws from torch's generator, its crops from the
    sampler's)."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert training_main(_args("hrnet48_ocr", straight)) == 0
    validate, calls = slices_train.validate, []

    def killed_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # epoch 2's steps are done, its checkpoint is not written
            raise KeyboardInterrupt
        return validate(*args, **kwargs)

    monkeypatch.setattr(slices_train, "validate", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        training_main(_args("hrnet48_ocr", stopped))
    monkeypatch.setattr(slices_train, "validate", validate)
    assert [r["epoch"] for r in _log(stopped)] == [1]
    assert training_main([*_args("hrnet48_ocr", stopped), "--resume"]) == 0
    key = lambda r: {k: v for k, v in r.items() if k != "elapsed_min"}
    assert [key(r) for r in _log(stopped)] == [key(r) for r in _log(straight)]
    a = torch.load(straight / "last.pt", weights_only=False)
    b = torch.load(stopped / "last.pt", weights_only=False)
    assert (a["step"], a["epoch"]) == (b["step"], b["epoch"]) == (4, 2)
    for k, v in a["model"].items():
        assert torch.equal(b["model"][k], v), k
    for k, v in a["optimizer"]["state"].items():
        assert all(torch.equal(b["optimizer"]["state"][k][n], t) for n, t in v.items() if torch.is_tensor(t)), k


def _run_folder(path: Path, config: str) -> Path:
    path.mkdir()
    (path / "config.json").write_text(config)
    return path


@pytest.mark.parametrize("held, asked", [("nnunet2d", "vgg13_unet_ds"), ("nnunet2d", "cobra"),
                                         ("cobra", "hrnet48_ocr")])
def test_resuming_another_architectures_run_is_refused_in_one_line(tmp_path, capsys, held, asked):
    config = (TrainConfig(data=str(DATA / "flare21")) if held == "cobra"
              else SliceTrainConfig(data=str(DATA / "flare21"), arch=held)).to_json()
    run = _run_folder(tmp_path / "run", config)
    err = _refusal(_args(asked, run, "--resume"), capsys)
    assert f"a run of --arch {held}, not of --arch {asked}" in err
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "train.log"]  # nothing trained, nothing written


@pytest.mark.slow
def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    run = _run_folder(tmp_path / "run", "")
    cfg = SliceTrainConfig(data=str(DATA / "flare21"), arch="nnunet2d", slice_size=(64, 64), width=0.0625, threads=1)
    (run / "config.json").write_text(cfg.to_json())
    torch.save({"arch": "vgg13_unet_ds", "model": {}, "optimizer": {}}, run / "last.pt")
    with pytest.raises(ValueError, match=r"last.pt: a checkpoint of vgg13_unet_ds, not of --arch nnunet2d"):
        slices_train.train_slices(cfg, run, resume=True)
    assert not (run / "train_log.jsonl").exists()
