"""The installable command: pyproject pins agree with the requirements files; `pip install .` into a fresh venv adds
one top-level package, abdoseg, whose command lists and runs every subcommand from outside the source tree."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import SimpleITK as sitk

from abdoseg.command import SUBCOMMANDS
from tests.helpers import DATA, ROOT, real_image, real_label

PACKAGE_PARTS = ("pyproject.toml", "README.md", "abdoseg")


def _requirement_lines(path: Path) -> set[str]:
    """Pinned requirements of one file, without the files it includes (-r)."""
    lines = (ln.split("#")[0].strip() for ln in path.read_text().splitlines())
    return {ln for ln in lines if ln and not ln.startswith("-")}


def test_pyproject_pins_match_requirements_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert set(project["dependencies"]) == _requirement_lines(ROOT / "requirements.txt")
    extras = project["optional-dependencies"]
    assert {"train", "eval", "dicom", "preview"} <= set(extras)
    for name, pins in extras.items():
        assert set(pins) == _requirement_lines(ROOT / f"requirements-{name}.txt"), name
    assert "torch" not in " ".join(project["dependencies"])  # the runtime stays torch-free


def _fresh_venv(tmp: Path) -> Path:
    """A new venv whose own site-packages comes first and which sees this interpreter's packages through a .pth
    (pip, setuptools and the dependencies: `pip install --no-deps` needs no network; the project is installed for real)."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)  # pip: this one's
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "_abdoseg_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


@pytest.mark.slow
def test_pip_install_gives_a_working_abdoseg_command(tmp_path):
    src = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info beside pyproject.toml
    src.mkdir()
    for part in PACKAGE_PARTS:
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / part, src / part)
    venv = _fresh_venv(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)

    purelib = Path(run(str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
                   .stdout.strip())
    before = set(os.listdir(purelib))
    pip = run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
              "--no-index", str(src))
    assert pip.returncode == 0, pip.stderr
    added = set(os.listdir(purelib)) - before
    assert {name for name in added if not name.endswith(".dist-info")} == {"abdoseg"}, added
    assert len(added) == 2 and (purelib / "abdoseg" / "weights" / "abdoseg_coarse_int8.onnx").is_file()
    abdoseg = venv / "bin" / "abdoseg"
    where = run(str(venv / "bin" / "python"), "-c", "import abdoseg; print(abdoseg.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr  # the installed copy, not the source

    helped = run(str(abdoseg), "--help")
    assert helped.returncode == 0 and all(name in helped.stdout for name in SUBCOMMANDS)
    for name in SUBCOMMANDS:  # each one's own help, from the installed package: its usage line names it
        sub_help = run(str(abdoseg), name, "--help")
        assert sub_help.returncode == 0 and sub_help.stdout.startswith(f"usage: abdoseg {name} "), \
            (name, sub_help.stdout[:200], sub_help.stderr[-500:])
    inputs, outputs = work / "in", work / "out"
    inputs.mkdir()
    shutil.copy(real_image("abdpelvis3mm"), inputs)
    shutil.copytree(DATA / "dicom" / "ct3slice", inputs / "ct3slice")  # a DICOM series folder is a case too
    predicted = run(str(abdoseg), "predict", "-i", str(inputs), "-o", str(outputs), "--runtime", "onnxruntime",
                    "--statistics")
    assert predicted.returncode == 0, predicted.stderr
    assert {p.name for p in outputs.iterdir()} == {"abdpelvis3mm.nii.gz", "abdpelvis3mm.json", "ct3slice.nii.gz",
                                                   "ct3slice.json"}
    out, ref = sitk.ReadImage(str(outputs / "abdpelvis3mm.nii.gz")), sitk.ReadImage(str(real_image("abdpelvis3mm")))
    assert out.GetSize() == ref.GetSize() and out.GetOrigin() == ref.GetOrigin()
    for given, output, wanted in (  # one scan file into a named label map; one DICOM series folder into a folder
            (inputs / "abdpelvis3mm_0000.nii.gz", work / "one" / "seg.nii.gz", work / "one" / "seg.nii.gz"),
            (inputs / "ct3slice", work / "series", work / "series" / "ct3slice.nii.gz")):
        one = run(str(abdoseg), "predict", "-i", str(given), "-o", str(output), "--runtime", "onnxruntime")
        assert one.returncode == 0 and [p.name for p in wanted.parent.iterdir()] == [wanted.name], one.stderr

    gt = work / "gt"
    gt.mkdir()
    shutil.copy(real_label("abdpelvis3mm"), gt)
    scored = run(str(abdoseg), "evaluate", "--pred", str(outputs), "--gt", str(gt))
    assert scored.returncode == 0, scored.stderr
    assert "liver" in scored.stdout and "1 cases" in scored.stdout
