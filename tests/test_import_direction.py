"""Imports point one way: inference imports neither training nor evaluation, evaluation never imports training,
and the networks import neither. Checked twice: every import statement in the source (also those inside
functions, which a run may never reach), and every inference module imported in a fresh process."""
import ast
import importlib.util
import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "abdoseg"
#: The fine stage's torch path: imported only where torch is installed (the CPU image has none).
TORCH_ONLY = {"abdoseg.inference.fine.preprocess", "abdoseg.inference.fine.sliding", "abdoseg.inference.fine.slabs"}
#: package -> the packages it must never import
FORBIDDEN = {"inference": ("abdoseg.training", "abdoseg.evaluation"),
             "networks": ("abdoseg.training", "abdoseg.evaluation"),
             "evaluation": ("abdoseg.training",)}


def _modules(package: str) -> list[str]:
    return sorted(".".join(("abdoseg", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
                  for p in (PACKAGE / package).rglob("*.py"))


def _imported_names(path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_statement_points_the_wrong_way(package):
    wrong = {str(p.relative_to(ROOT)): sorted(n for n in _imported_names(p) if n.startswith(FORBIDDEN[package]))
             for p in (PACKAGE / package).rglob("*.py")}
    assert {path: names for path, names in wrong.items() if names} == {}


def test_importing_every_inference_module_loads_no_training_or_evaluation_module():
    modules = _modules("inference")
    assert "abdoseg.inference.pipeline" in modules and "abdoseg.inference.io.read" in modules
    if importlib.util.find_spec("torch") is None:
        modules = [m for m in modules if m not in TORCH_ONLY]
    code = ("import importlib, json, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules\n"
            "                        if m.startswith(('abdoseg.training', 'abdoseg.evaluation')))))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []


def test_the_runtime_modules_import_without_torch():
    """The CPU image has no torch (nor Ray): only the fine stage's torch path (its preprocess, sliding windows, slabs)
    needs torch; Ray and pydicom (DICOM input and output only) load inside the functions that use them, so a run on
    NIfTI files never pays for them."""
    modules = [m for m in _modules("inference") if m not in TORCH_ONLY]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(sorted({'torch', 'ray', 'pydicom'} & set(sys.modules)))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
