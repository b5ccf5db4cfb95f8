"""The container images carry everything the fine stage needs: its graphs and cards (the CPU runner, no torch), and
its network definition and fine.pt (the CUDA runner).

Both image variants copy the build context that .dockerignore lets through. Here the two-stage card runs torch-free,
and the torch runner on the CPU, each in a fresh process that sees only a copy of exactly those files.
"""
import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT, real_image
from tests.helpers.image_context import context_files, excluded, read_rules


def test_the_context_rules_follow_dockers_matching():
    rules = read_rules(ROOT / ".dockerignore")
    assert not excluded("abdoseg/inference/io/read.py", rules)
    assert excluded("abdoseg/inference/io/__pycache__/read.cpython-311.pyc", rules)
    assert excluded("abdoseg/training/train.py", rules) and excluded("abdoseg/evaluation/cli.py", rules)
    assert excluded("tests/data/flare21/imagesTr/abdpelvis3mm_0000.nii.gz", rules) and excluded(".venv", rules)


def test_the_context_holds_the_runtime_package_and_the_fine_stage_but_no_training():
    files = context_files(ROOT)
    assert {"predict.sh", "requirements.txt", "requirements-gpu.txt", "abdoseg/__main__.py", "abdoseg/command.py",
            "abdoseg/networks/fine_unet.py", "abdoseg/networks/cobra_unet.py", "abdoseg/weights/fine.pt",
            "abdoseg/weights/fine.json", "abdoseg/weights/abdoseg_coarse_int8.onnx", "abdoseg/weights/fine.onnx",
            "abdoseg/weights/fine_int8.onnx", "abdoseg/weights/fine_int8.json",
            "abdoseg/weights/abdoseg_coarse_int8_fine.json"} <= set(files)
    assert not [f for f in files if f.startswith(("abdoseg/training/", "abdoseg/evaluation/", "tests/", ".venv"))]


def _image(tmp_path):
    """A copy of exactly the files of the build context."""
    image = tmp_path / "workspace"
    for rel in context_files(ROOT):
        (image / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, image / rel)
    return image


@pytest.mark.slow
def test_the_two_stage_card_runs_without_torch_from_exactly_the_image_context(tmp_path):
    """The CPU image's command with --card flare21-fine, in a process where torch cannot be imported."""
    image = _image(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch fails
        from abdoseg.command import main
        sys.exit(main(["predict", "-i", {str(real_image("upperabd1mm"))!r}, "-o", {str(tmp_path / "out")!r},
                       "--card", "flare21-fine", "--threads", "2", "--log", {str(tmp_path / "log.jsonl")!r}]))
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(image), "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", script], cwd=image, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    assert "fine" in record["seconds"] and record["fine"]["crop_voxels"] > 0 and "pancreas" in record["organs_found"]
    assert "fine stage abdoseg_fine_int8 (openvino" in run.stderr


@pytest.mark.slow
def test_the_fine_stage_runs_from_exactly_the_image_context(tmp_path):
    pytest.importorskip("torch")
    image = _image(tmp_path)
    script = textwrap.dedent(f"""
        import json, sys
        import abdoseg
        from abdoseg.inference.card import WEIGHTS_DIR
        from abdoseg.inference.fine import FineStage
        from abdoseg.inference.pipeline import Predictor, StageClock
        predictor = Predictor.load("flare21", threads=2)
        predictor.fine = FineStage.load(WEIGHTS_DIR, "cpu")
        clock = StageClock()
        predictor.predict_file({str(real_image("upperabd1mm"))!r}, {str(tmp_path / "out.nii.gz")!r}, clock)
        print(json.dumps({{"package": abdoseg.__file__, "stages": list(clock.seconds),
                          "organs": clock.organs_found, "fine": clock.details.get("fine", {{}}).get("crop_voxels"),
                          "training": sorted(m for m in sys.modules if m.startswith(("abdoseg.training",
                                                                                       "abdoseg.evaluation")))}}))
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(image), "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", script], cwd=image, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["package"].startswith(str(image))
    assert "fine" in result["stages"] and result["fine"] > 0 and "liver" in result["organs"]
    assert result["training"] == []
