"""Finding the cases of an input folder, and the checks that keep an output off the inputs.

A case is a scan file named `<case>_0000.<ext>` or a DICOM series folder (abdoseg.inference.io.dicom); a case with
inputs in several formats is ambiguous and fails with its reason; an output never replaces an input, and a failed
case's earlier output is removed (never an input).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from abdoseg.inference.io.errors import InputError, shown

#: `<case>_0000.<ext>`: the FLARE naming of the (single) CT channel. Any character may be part of <case>.
CASE_PATTERN = re.compile(r"^(?P<case>.+)_0000\.(?P<ext>nii\.gz|nii|mha|nrrd)\Z", re.DOTALL)


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    problem: str | None = None  # why the case cannot run although it is named like one (e.g. two inputs)

    def output_path(self, out_dir: Path) -> Path:
        return Path(out_dir) / f"{self.name}.nii.gz"

    @property
    def label(self) -> str:
        """The case name as one printable line."""
        return shown(self.name)


def find_cases(in_dir: Path) -> tuple[list[Case], list[Path]]:
    """Cases named `<case>_0000.{nii.gz,nii,mha,nrrd}` in `in_dir` (sorted by name), and the other files ignored.

    Everything named like a scan is a case, also a dangling symbolic link or a link loop (it then fails with its
    reason); folders are ignored unless they hold a DICOM series (abdoseg.inference.io.dicom: the folder is the case). A
    case with inputs in several formats is one case with a `problem`.
    """
    from abdoseg.inference.io.dicom import is_series_folder, series_case_name

    found: dict[str, list[Path]] = {}
    ignored = []
    for p in sorted(Path(in_dir).iterdir()):
        m = CASE_PATTERN.match(p.name)
        if m and not p.is_dir():
            found.setdefault(m["case"], []).append(p)
        elif is_series_folder(p):  # a DICOM series folder is a case too (abdoseg.inference.io.dicom)
            found.setdefault(series_case_name(p), []).append(p)
        elif not p.name.startswith("."):
            ignored.append(p)
    cases = []
    for name, paths in sorted(found.items()):
        problem = None
        if len(paths) > 1:
            problem = (f"{shown(paths[0].parent)}: {len(paths)} inputs for case {shown(name)} "
                       f"({', '.join(shown(p.name) for p in paths)}): ambiguous, keep only one")
        cases.append(Case(name, paths[0], problem))
    return cases, ignored


def replaces_input(out_path: Path, in_dir: Path) -> bool:
    """True when `out_path` is an input of `in_dir` (output folder = input folder and the output's name is a
    scan's, e.g. case `a_0000` -> `a_0000.nii.gz`, the input of case `a`): it must never be written or removed."""
    out_path = Path(out_path)
    try:
        same_folder = os.path.samefile(out_path.parent, in_dir)
    except OSError:
        return False
    return same_folder and CASE_PATTERN.match(out_path.name) is not None and os.path.lexists(out_path)


def check_case(case: Case, out_path: Path, in_dir: Path) -> None:
    """InputError when the case cannot run whatever its scan holds (its `problem`, or an output onto an input)."""
    if case.problem:
        raise InputError(case.problem)
    if replaces_input(out_path, in_dir):
        raise InputError(f"{shown(case.path)}: its output {shown(Path(out_path).name)} would replace an input "
                         "scan of the same folder; write the outputs to another folder")


def remove_stale_output(out_path: Path, in_dir: Path) -> bool:
    """Remove an earlier run's `out_path` after this run failed the case (never an input); True if one was removed."""
    out_path = Path(out_path)
    if replaces_input(out_path, in_dir) or not os.path.lexists(out_path) or out_path.is_dir():
        return False
    out_path.unlink()
    return True
