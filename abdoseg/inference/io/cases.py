"""What `-i` and `-o` name: the cases to segment and where their outputs go; the checks that keep outputs off inputs.

`-i` is one scan file (any name), one DICOM series folder (a folder holding DICOM slices directly, or whose
sub-folders hold different slices of one series), or a folder of cases. In a folder of cases: a scan
`<case>_0000.<ext>` is case <case>, a scan `<name>.<ext>` is case <name> (not when the output folder is the input
folder: there a plain name may be an earlier output), and a sub-folder with DICOM files at any depth is a series
case named after the folder (abdoseg.inference.io.dicom). A file of another channel (`<case>_0001.<ext>` ...) and
two inputs giving one case name make a case that fails with its reason. `-o` is a folder, or, for a single input, a
file name ending in `.nii.gz`. An output never replaces an input, and a failed case's outputs are removed (never an
input).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from abdoseg.inference.io.errors import InputError, shown

#: The scan file extensions a case may have.
SCAN_EXTENSIONS = ("nii.gz", "nii", "mha", "nrrd")
SCAN_PATTERN = re.compile(r"^(?P<stem>.+)\.(?P<ext>nii\.gz|nii|mha|nrrd)\Z", re.DOTALL)
#: `<case>_NNNN.<ext>`: nnU-Net's / FLARE's channel naming; _0000 is the (single) CT channel.
CHANNEL_PATTERN = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.(?P<ext>nii\.gz|nii|mha|nrrd)\Z", re.DOTALL)
#: `<case>_0000.<ext>`: the FLARE naming of the CT channel. Any character may be part of <case>.
CASE_PATTERN = re.compile(r"^(?P<case>.+)_0000\.(?P<ext>nii\.gz|nii|mha|nrrd)\Z", re.DOTALL)
#: An `-o` ending in this names the label map file of a single input.
OUTPUT_FILE_SUFFIX = ".nii.gz"


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    problem: str | None = None  # why the case cannot run whatever its scan holds (e.g. two inputs)
    output_name: str | None = None  # the outputs' file name stem when not the case name (`-o FILE.nii.gz`)

    @property
    def stem(self) -> str:
        """The file name stem of the case's outputs (<stem>.nii.gz, .json, .png, .seg.dcm, .rtstruct.dcm)."""
        return self.output_name or self.name

    def output_path(self, out_dir: Path) -> Path:
        return Path(out_dir) / f"{self.stem}.nii.gz"

    @property
    def label(self) -> str:
        """The case name as one printable line."""
        return shown(self.name)


@dataclass(frozen=True)
class Inputs:
    """What `-i`/`-o` resolve to: the cases, the files ignored, the folder holding the inputs, the output folder."""

    cases: list[Case]
    ignored: list[Path]
    in_dir: Path
    out_dir: Path
    plain_names: bool = True  # False: the output folder is the input folder, only `_0000` names are cases


def file_case_name(path: Path) -> str:
    """The case name of a scan file: without `_0000` and extension (`ct_0000.nii.gz`, `ct.nii.gz` -> `ct`)."""
    m = CASE_PATTERN.match(path.name) or SCAN_PATTERN.match(path.name)
    if m:
        return m.groupdict().get("case") or m["stem"]
    return path.name.split(".")[0] or path.name


def find_cases(in_dir: Path, plain_names: bool = True) -> tuple[list[Case], list[Path]]:
    """The cases of the folder `in_dir` (sorted by name; see the module docstring) and the other names, ignored.

    Everything named like a scan is a case, also a dangling symbolic link or a link loop (it then fails with its
    reason). `plain_names=False`: `<name>.<ext>` without a channel suffix is ignored.
    """
    from abdoseg.inference.io.dicom import series_case_name
    from abdoseg.inference.io.dicom_files import holds_dicom

    found: dict[str, list[Path]] = {}
    channels: dict[str, list[Path]] = {}
    ignored = []
    for p in sorted(Path(in_dir).iterdir()):
        if p.name.startswith("."):
            continue
        channel, scan = CHANNEL_PATTERN.match(p.name), SCAN_PATTERN.match(p.name)
        if channel and not p.is_dir():
            (found if channel["channel"] == "0000" else channels).setdefault(channel["case"], []).append(p)
        elif scan and plain_names and not p.is_dir():
            found.setdefault(scan["stem"], []).append(p)
        elif p.is_dir() and holds_dicom(p):
            found.setdefault(series_case_name(p), []).append(p)
        else:
            ignored.append(p)
    return [_case(name, found.get(name, []), channels.get(name, [])) for name in sorted({*found, *channels})], ignored


def _case(name: str, paths: list[Path], other_channels: list[Path]) -> Case:
    if other_channels:
        p = other_channels[0]
        return Case(name, p,  # the file the refusal names
                    f"{shown(p)}: a second input channel (_{CHANNEL_PATTERN.match(p.name)['channel']}) of case "
                    f"{shown(name)}; abdoseg segments one CT channel (_0000): move the other channels out")
    problem = None
    if len(paths) > 1:
        problem = (f"{shown(paths[0].parent)}: {len(paths)} inputs for case {shown(name)} "
                   f"({', '.join(shown(p.name) for p in paths)}): ambiguous, keep only one")
    return Case(name, paths[0], problem)


def ignored_reason(path: Path, plain_names: bool) -> str:
    """Why find_cases ignored `path`, for the note."""
    if SCAN_PATTERN.match(path.name) and not plain_names:
        return "a plain scan name in the output folder may be an earlier output: name inputs <case>_0000 there"
    return "not a scan (<case>_0000 or <name> .nii.gz/.nii/.mha/.nrrd) nor a folder with DICOM files"


def resolve_inputs(source: Path, output: Path) -> Inputs:
    """The cases `-i source` names and the output folder of `-o output`; InputError with one line when neither a
    scan file, a DICOM series folder nor a folder of cases, or when a file output is given for several cases."""
    from abdoseg.inference.io.dicom import series_case_name

    source, output = Path(source), Path(output)
    to_file = output.name.endswith(OUTPUT_FILE_SUFFIX) and not output.is_dir()
    if source.is_dir():
        if not _holds_slices_directly(source) and not _series_split_over_folders(source):
            plain = not _same_folder(source, output)
            if to_file:
                raise InputError(f"{shown(output)}: a file name, but {shown(source)} is a folder of cases: "
                                 "give an output folder")
            cases, ignored = find_cases(source, plain)
            return Inputs(cases, ignored, source, output, plain)
        case = Case(series_case_name(source), source)
    elif os.path.lexists(source):
        _refuse_single_dicom_file(source)
        case = Case(file_case_name(source), source)
    else:
        raise InputError(f"{shown(source)}: no such file or folder")
    if to_file:
        return Inputs([Case(case.name, case.path, output_name=output.name[: -len(OUTPUT_FILE_SUFFIX)])], [],
                      source.parent, output.parent)
    return Inputs([case], [], source.parent, output)


def _refuse_single_dicom_file(path: Path) -> None:
    from abdoseg.inference.io.dicom_files import is_dicom_file

    if path.is_file() and is_dicom_file(path):
        raise InputError(f"{shown(path)}: a single DICOM file; give the folder of its series (-i FOLDER)")


def _holds_slices_directly(folder: Path) -> bool:
    """True when `folder` itself holds a DICOM slice (or a broken DICOM file), not only in sub-folders: it is a
    series folder, not a folder of cases. DICOMDIR, SEG, RTSTRUCT and other objects beside case folders do not
    count."""
    from abdoseg.inference.io.dicom_files import Slice, is_dicom_file, read_dicom_header

    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or not is_dicom_file(p):
            continue
        try:
            if isinstance(read_dicom_header(p), Slice):
                return True
        except InputError:
            return True  # a broken slice: the folder is a series, which then fails naming the file
    return False


def _series_split_over_folders(folder: Path) -> bool:
    """True when sub-folders of `folder` hold different slices of one series (same series UID and orientation, no
    instance and no position in two of them): `folder` is one exam spread over sub-folders, not a folder of cases.
    Case folders that hold copies or variants of one series share instances or positions and stay cases."""
    from abdoseg.inference.io.dicom_files import Slice, files_below, is_dicom_file, read_dicom_header

    def slices(sub: Path, first_only: bool) -> list[Slice]:
        found = []
        for path in (p for p in files_below(sub) if is_dicom_file(p)):
            try:
                header = read_dicom_header(path)
            except InputError:
                continue
            if isinstance(header, Slice):
                found.append(header)
                if first_only:
                    break
        return found

    by_series: dict[str, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        first = slices(sub, first_only=True)
        if first and first[0].series_uid:
            by_series.setdefault(first[0].series_uid, []).append(sub)
    for subs in (s for s in by_series.values() if len(s) > 1):
        parts = [slices(sub, first_only=False) for sub in subs]
        instances = [{h.sop_uid for h in part} for part in parts]
        positions = [{tuple(round(v, 2) for v in h.position) for h in part} for part in parts]
        orientations = {tuple(round(v, 4) for v in h.orientation) for part in parts for h in part}
        if len(orientations) == 1 and all(sum(len(x) for x in sets) == len(set().union(*sets))
                                          for sets in (instances, positions)):
            return True
    return False


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def replaces_input(out_path: Path, in_dir: Path, case: Case | None = None) -> bool:
    """True when `out_path` is an input: the case's own scan file, or, in the input folder, a file named like a
    scan channel (`<x>_NNNN.<ext>`, e.g. case `a_0000` -> `a_0000.nii.gz`, the input of case `a`). It must never be
    written or removed."""
    out_path = Path(out_path)
    if not os.path.lexists(out_path):
        return False
    if case is not None and not case.path.is_dir() and _same_folder(out_path, case.path):
        return True
    return _same_folder(out_path.parent, in_dir) and CHANNEL_PATTERN.match(out_path.name) is not None


def check_case(case: Case, out_path: Path, in_dir: Path) -> None:
    """InputError when the case cannot run whatever its scan holds (its `problem`, or an output onto an input)."""
    if case.problem:
        raise InputError(case.problem)
    if replaces_input(out_path, in_dir, case):
        raise InputError(f"{shown(case.path)}: its output {shown(Path(out_path).name)} would replace an input "
                         "scan; write the outputs to another folder")


def remove_stale_output(out_path: Path, in_dir: Path, case: Case | None = None) -> bool:
    """Remove `out_path` (a failed case's output, or an earlier run's) unless it is an input; True if removed."""
    out_path = Path(out_path)
    if replaces_input(out_path, in_dir, case) or not os.path.lexists(out_path) or out_path.is_dir():
        return False
    out_path.unlink()
    return True
