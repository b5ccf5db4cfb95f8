"""Reading scans with clear errors, finding cases, and writing label maps atomically."""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: `<case>_0000.<ext>`: the FLARE naming of the (single) CT channel.
CASE_PATTERN = re.compile(r"^(?P<case>.+)_0000\.(?P<ext>nii\.gz|nii|mha|nrrd)$")


class InputError(ValueError):
    """A scan that cannot be segmented; the message names the file and the reason in one line."""


@dataclass(frozen=True)
class Case:
    name: str
    path: Path

    def output_path(self, out_dir: Path) -> Path:
        return Path(out_dir) / f"{self.name}.nii.gz"


def find_cases(in_dir: Path) -> tuple[list[Case], list[Path]]:
    """Cases named `<case>_0000.{nii.gz,nii,mha,nrrd}` in `in_dir` (sorted), and the other files ignored."""
    cases, ignored = [], []
    for p in sorted(Path(in_dir).iterdir()):
        m = CASE_PATTERN.match(p.name)
        if m and p.is_file():
            cases.append(Case(m["case"], p))
        elif not p.name.startswith("."):
            ignored.append(p)
    return cases, ignored


def read_scan(path: Path) -> sitk.Image:
    """Read a 3D scalar scan, or raise InputError naming the file and why it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if "ERROR" in ln or "rror" in ln), str(e).strip())
        raise InputError(f"{path}: not a readable image ({detail[:160]})") from e
    if image.GetDimension() != 3:
        raise InputError(f"{path}: {image.GetDimension()}D image, expected a 3D CT scan")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: {image.GetNumberOfComponentsPerPixel()}-component (vector) pixels, expected scalar CT")
    if "complex" in image.GetPixelIDTypeAsString():
        raise InputError(f"{path}: complex pixels, expected real CT intensities")
    if min(image.GetSize()) < 1:
        raise InputError(f"{path}: empty image of size {image.GetSize()}")
    if not all(np.isfinite(image.GetSpacing())) or min(image.GetSpacing()) <= 0:
        raise InputError(f"{path}: invalid spacing {image.GetSpacing()}")
    return image


def write_labels_atomic(labels: np.ndarray, reference: sitk.Image, out_path: Path) -> None:
    """Write `labels` (z,y,x uint8, stored order) on `reference`'s grid; temp file in the same folder, then rename."""
    out_path = Path(out_path)
    image = sitk.GetImageFromArray(np.asarray(labels, dtype=np.uint8))
    image.CopyInformation(reference)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".nii.gz", dir=out_path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(image, tmp, True, 1)  # useCompression, fastest level: label maps compress well anyway
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
