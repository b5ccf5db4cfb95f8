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


#: Imports of the inference package that the runtime image (requirements.txt) does not provide: each names the
#: extra that provides it and the only modules allowed to import it, inside the functions that use it.
OPTIONAL_IMPORTS = {
    "torch": ("requirements-gpu.txt", {"fine/preprocess.py", "fine/slabs.py", "fine/sliding.py", "fine/stage.py"}),
    "ray": ("requirements-cohort.txt", {"cohort/cli.py", "cohort/runner.py"}),
    "PIL": ("requirements-preview.txt", {"outputs/preview.py"}),
    "highdicom": ("requirements-dicom.txt", {"outputs/dicom.py"}),
    "contourpy": ("requirements-dicom.txt", {"outputs/dicom.py"}),
    "pynvml": ("requirements-gpu.txt", {"process/resources.py"}),
}


def _requirement_names(path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(line.split("==")[0].split(">=")[0].split("[")[0].strip().lower().replace("_", "-"))
    return names


def test_inference_imports_only_what_the_runtime_image_installs():
    """A module the runtime image lacks fails only when that image runs it (a baked card, the container check):
    every third-party import in abdoseg/inference must come from a distribution named in requirements.txt, or
    be an optional extra's, in the modules listed above."""
    from importlib.metadata import packages_distributions

    providers = packages_distributions()
    runtime = _requirement_names(ROOT / "requirements.txt")
    wrong = set()
    for path in sorted((PACKAGE / "inference").rglob("*.py")):
        relative = path.relative_to(PACKAGE / "inference").as_posix()
        for name in _imported_names(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ("abdoseg", "__future__"):
                continue
            dists = {d.lower().replace("_", "-") for d in providers.get(top, [])}
            if dists & runtime:
                continue
            extra = OPTIONAL_IMPORTS.get(top)
            if extra is None or relative not in extra[1]:
                wrong.add(f"{relative} imports {top}")
    assert sorted(wrong) == []


@pytest.mark.parametrize("module", sorted(OPTIONAL_IMPORTS))
def test_every_optional_import_is_in_its_extra(module):
    extra, _ = OPTIONAL_IMPORTS[module]
    from importlib.metadata import packages_distributions

    dists = {d.lower().replace("_", "-") for d in packages_distributions().get(module, [module])}
    assert dists & _requirement_names(ROOT / extra), f"{module} is not in {extra}"
