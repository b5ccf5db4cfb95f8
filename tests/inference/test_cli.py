"""The folder-level contract: naming, bad inputs, odd-but-valid scans, atomic outputs, exit codes, predict.sh."""
import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from abdoseg.inference.cli import main
from abdoseg.inference.io.cases import find_cases
from tests.helpers import ROOT, real_image
from tests.helpers.synthetic import synthetic_ct


def _write(img, path):
    sitk.WriteImage(img, str(path), True)
    return path


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _assert_same_grid(a: sitk.Image, b: sitk.Image):
    assert a.GetSize() == b.GetSize()
    assert a.GetSpacing() == b.GetSpacing()
    assert a.GetOrigin() == b.GetOrigin()
    assert a.GetDirection() == b.GetDirection()


def test_case_naming(tmp_path):
    for name in ["a_0000.nii.gz", "b_0000.nii", "c_0000.mha", "d_0000.nrrd", "e_0001.nii.gz", "notes.txt", "f.nii.gz",
                 "g_0000.nii.gz", "g.mha"]:
        (tmp_path / name).write_bytes(b"x")
    cases, ignored = find_cases(tmp_path)
    assert [c.name for c in cases] == ["a", "b", "c", "d", "e", "f", "g"]
    assert [p.name for p in ignored] == ["notes.txt"]
    assert cases[0].output_path(Path("/o")) == Path("/o/a.nii.gz")
    assert [c.name for c in cases if c.problem is None] == ["a", "b", "c", "d", "f"]
    e, g = cases[4], cases[6]
    assert e.problem == f"{tmp_path / 'e_0001.nii.gz'}: a second input channel (_0001) of case e; abdoseg segments " \
        "one CT channel (_0000): move the other channels out"
    assert "2 inputs for case g (g.mha, g_0000.nii.gz): ambiguous" in g.problem
    cases, ignored = find_cases(tmp_path, plain_names=False)  # the output folder is the input folder
    assert [c.name for c in cases] == ["a", "b", "c", "d", "e", "g"] and cases[-1].problem is None
    assert sorted(p.name for p in ignored) == ["f.nii.gz", "g.mha", "notes.txt"]


def _bad_inputs(folder: Path) -> dict[str, str]:
    """Each unusable input, with the reason its error line must give."""
    (folder / "empty_0000.nii.gz").write_bytes(b"")
    good = _write(synthetic_ct((8, 9, 10), (1, 1, 1)), folder / "tmp_good.nii.gz").read_bytes()
    (folder / "truncated_0000.nii.gz").write_bytes(good[: len(good) // 2])
    (folder / "text_0000.nii.gz").write_bytes(gzip.compress(b"this is not an image\n" * 50))
    _write(sitk.Image(20, 20, sitk.sitkInt16), folder / "flat_0000.nii.gz")
    vol = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))
    _write(sitk.JoinSeries([vol, vol]), folder / "fourd_0000.nii.gz")  # a true 4D (time series) NIfTI
    _write(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16)), folder / "tmp_raw.nii")
    raw = (folder / "tmp_raw.nii").read_bytes()
    (folder / "cut_0000.nii").write_bytes(raw[: len(raw) - 7])
    (folder / "tmp_raw.nii").unlink()
    _write(sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.int16), isVector=True), folder / "vector_0000.nii.gz")
    (folder / "tmp_good.nii.gz").unlink()
    return {"empty": "empty file", "truncated": "truncated or corrupt", "text": "not a readable image",
            "flat": "2D image", "fourd": "4D image", "vector": "vector", "cut": "truncated"}


def _odd_inputs(folder: Path) -> list[str]:
    rng = np.random.default_rng(0)
    _write(sitk.GetImageFromArray(np.full((20, 30, 30), -1024, np.int16)), folder / "air_0000.nii.gz")
    f = sitk.GetArrayFromImage(synthetic_ct((20, 30, 30), (2, 1, 1))).astype(np.float32)
    f[0, 0, :5] = [np.nan, np.inf, -np.inf, np.nan, 1e30]
    _write(sitk.GetImageFromArray(f), folder / "nanfloat_0000.nii.gz")
    _write(sitk.GetImageFromArray(rng.integers(0, 255, (3, 3, 3)).astype(np.uint8)), folder / "tiny_uint8_0000.nii.gz")
    _write(sitk.GetImageFromArray(f.astype(np.float64) * 0.5), folder / "float64_0000.mha")
    _write(synthetic_ct((1100, 12, 10), (0.5, 3, 3)), folder / "tall_0000.nrrd")
    return ["air", "nanfloat", "tiny_uint8", "float64", "tall"]


def test_bad_inputs_fail_alone_and_odd_inputs_succeed(tmp_path, any_toy_card_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    reasons = _bad_inputs(inputs)
    odd = _odd_inputs(inputs)
    (inputs / "README.txt").write_text("not a scan")
    for p in inputs.iterdir():
        p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # as a read-only mount
    before = _digest(inputs)
    rc = main(["-i", str(inputs), "-o", str(outputs), "--card", str(any_toy_card_path), "--runtime", "onnxruntime",
               "--threads", "1", "--log", str(tmp_path / "log.jsonl")])
    err = capsys.readouterr().err
    assert rc == 1  # some cases failed
    assert _digest(inputs) == before  # inputs untouched
    for case, reason in reasons.items():
        line = next(ln for ln in err.splitlines() if ln.startswith(f"{case}: FAILED"))
        assert f"{case}_0000.nii" in line and reason in line, line
        assert not (outputs / f"{case}.nii.gz").exists()
    assert "ignoring README.txt" in err
    for case in odd:
        src = next(inputs.glob(f"{case}_0000.*"))
        out = sitk.ReadImage(str(outputs / f"{case}.nii.gz"))
        _assert_same_grid(out, sitk.ReadImage(str(src)))
        assert out.GetPixelID() == sitk.sitkUInt8
        assert set(np.unique(sitk.GetArrayViewFromImage(out))) <= {0, 1, 2, 3, 4}
    assert sorted(p.name for p in outputs.iterdir()) == sorted(f"{c}.nii.gz" for c in odd)  # no temp files
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {r["case"] for r in records} == set(reasons) | set(odd)
    ok = next(r for r in records if r["case"] == "tall")
    assert ok["status"] == "ok" and {"read", "graph", "write"} <= set(ok["seconds"]) and ok["peak_rss_mb"] > 0


def test_all_good_exits_zero_and_keeps_grid_of_a_real_scan(tmp_path, any_toy_card_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    shutil.copy(real_image("upperabd1mm"), inputs)
    assert main(["-i", str(inputs), "-o", str(outputs), "--card", str(any_toy_card_path)]) == 0
    _assert_same_grid(sitk.ReadImage(str(outputs / "upperabd1mm.nii.gz")), sitk.ReadImage(str(real_image("upperabd1mm"))))


def test_usage_errors(tmp_path, toy_card_path, capsys):
    assert main(["-i", str(tmp_path / "nope"), "-o", str(tmp_path), "--card", str(toy_card_path)]) == 2
    assert "nope: no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["-i", str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "--card", str(toy_card_path)]) == 1
    assert "empty: no cases found" in capsys.readouterr().err
    assert main(["-i", str(tmp_path), "-o", str(tmp_path), "--card", str(tmp_path / "missing.json")]) == 2
    assert "model card not found" in capsys.readouterr().err


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_unusable_model_file_is_one_line_error(tmp_path, capsys, runtime):
    """The runtime opens in the background; its failure still ends the run with one line naming the file."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(real_image("upperabd1mm"), inputs)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx file" * 64)
    code = main(["-i", str(inputs), "-o", str(tmp_path / "out"), "--card", "cobra", "--model", str(garbage),
                 "--runtime", runtime])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"abdoseg: error: {garbage}: {runtime} cannot open this model")
    assert not list((tmp_path / "out").glob("*"))


def test_help_is_helpful():
    out = subprocess.run([sys.executable, "-m", "abdoseg", "predict", "--help"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0
    for word in ("--model", "--card", "cobra", "--runtime", "--threads", "--device", "--log", "liver"):
        assert word in out.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("dash") is None and shutil.which("sh") is None, reason="no POSIX sh")
def test_predict_sh_runs_under_posix_sh(tmp_path, any_toy_card_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    _write(synthetic_ct((10, 20, 20), (2, 1, 1)), inputs / "p1_0000.nii.gz")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    sh = shutil.which("dash") or shutil.which("sh")
    res = subprocess.run([sh, "predict.sh", str(inputs), str(outputs), "--card", str(any_toy_card_path)],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert (outputs / "p1.nii.gz").exists()
    assert "p1: 20x20x10" in res.stderr and "total" in res.stderr
