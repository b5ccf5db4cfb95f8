"""The cohort's case list (a folder of scans named as `abdoseg predict` takes them, or a CSV manifest) and the resume
check. A case that cannot run whatever its scan holds (two inputs, a second channel) keeps its `problem`."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abdoseg.inference.grid.scan import Grid
from abdoseg.inference.io.cases import CASE_PATTERN, find_cases
from abdoseg.inference.io.errors import InputError, shown
from abdoseg.inference.io.read import read_header


@dataclass(frozen=True)
class CohortCase:
    """One scan to segment and where its label map goes."""

    name: str
    image: Path
    output: Path
    problem: str | None = None  # why it cannot run whatever the scan holds (e.g. two inputs): a failed row


def _name_of(image: Path) -> str:
    m = CASE_PATTERN.match(image.name)
    if m:
        return m["case"]
    for ext in (".nii.gz", ".nii", ".mha", ".nrrd"):
        if image.name.endswith(ext):
            return image.name[: -len(ext)]
    return image.stem


def read_manifest(path: Path) -> list[tuple[str, Path]]:
    """(case, image) pairs from a CSV with an `image` column (absolute, or relative to the CSV's folder) and an
    optional `case` column (default: the file name without `_0000` and extension). ValueError on a bad manifest."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "image" not in reader.fieldnames:
            raise ValueError(f"{path}: manifest needs a header with an 'image' column (optional: 'case')")
        rows = []
        for line, row in enumerate(reader, start=2):
            image = (row.get("image") or "").strip()
            if not image:
                raise ValueError(f"{path}:{line}: empty 'image'")
            image_path = Path(image) if Path(image).is_absolute() else path.parent / image
            rows.append(((row.get("case") or "").strip() or _name_of(image_path), image_path))
    return rows


def load_cases(source: Path, out_dir: Path) -> tuple[list[CohortCase], list[Path]]:
    """The cases of a folder (as `python -m abdoseg predict` finds them) or of a CSV manifest, sorted by name, and the
    folder's ignored files. ValueError when the source is missing, a manifest is malformed, or names repeat."""
    problems: dict[str, str] = {}
    if source.is_dir():
        found, ignored = find_cases(source)
        pairs = [(c.name, c.path) for c in found]
        problems = {c.name: c.problem or _series_problem(c.path) for c in found if c.problem or c.path.is_dir()}
    elif source.is_file():
        pairs, ignored = read_manifest(source), []
    else:
        raise ValueError(f"{source}: no such folder or manifest")
    names = [n for n, _ in pairs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{source}: case names must be unique, repeated: {', '.join(repeated[:5])}")
    cases = [CohortCase(n, p, Path(out_dir) / f"{n}.nii.gz", problems.get(n)) for n, p in pairs]
    return sorted(cases, key=lambda c: c.name), ignored


def _series_problem(folder: Path) -> str:
    return f"{shown(folder)}: a DICOM series folder; abdoseg cohort segments scan files (abdoseg predict reads series)"


def has_valid_output(case: CohortCase) -> bool:
    """True when the case's output exists and its header is on the input's grid (size, spacing, origin,
    direction): a finished case of an earlier run. A missing, unreadable or mismatched output means: redo."""
    if not case.output.is_file():
        return False
    try:
        return same_grid(Grid.of(read_header(case.output)), Grid.of(read_header(case.image)))
    except InputError:
        return False


def same_grid(a: Grid, b: Grid, tol: float = 1e-5) -> bool:
    """Same size, and spacing/origin/direction equal to float32 precision (a NIfTI header stores float32, so an
    output written for a .mha/.nrrd scan holds its double geometry rounded)."""
    if tuple(a.size) != tuple(b.size):
        return False
    return all(np.allclose(x, y, rtol=tol, atol=tol) for x, y in
               ((a.spacing, b.spacing), (a.origin, b.origin), (a.direction, b.direction)))
