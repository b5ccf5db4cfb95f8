"""Re-framed copies of a FLARE folder, to check that a model does not depend on how a scan is stored or framed.

Variants (image and label treated alike; labels always by nearest neighbour):
  original    the files as they are
  reoriented  the same voxels stored in another orientation (axes permuted and flipped; exact)
  upper60     the upper (head-side) 60 % of the slices, physical positions kept
  finer       resampled to a finer grid (half the spacing on each axis, at least 0.5 mm)
  long_*      long scans (abdoseg.training.long_scans): the scan's organ-free slices mirrored and appended below
              (organs at the top), above (at the bottom) or both, to chest-abdomen-pelvis and whole-body
              lengths; written only for cases that have organ-free slices
"""
from __future__ import annotations

import math
from pathlib import Path

VARIANTS = ("original", "reoriented", "upper60", "finer")
#: long variant -> (mm appended below, mm appended above)
LONG_VARIANTS = {"long_top": (300.0, 0.0), "long_bottom": (0.0, 300.0), "long_wholebody": (525.0, 525.0)}
OTHER_ORIENTATION = "PIL"  # coronal-like storage: rows run posterior, slices inferior, columns left


def _upper(image, fraction: float):
    """The head-side `fraction` of the slices along the patient's S axis, in the image's own storage order."""
    import SimpleITK as sitk

    from abdoseg.inference.grid.orientation import orientation_of

    code = orientation_of(image.GetDirection())
    axis = next(i for i, c in enumerate(code) if c in "SI")
    n = image.GetSize()[axis]
    keep = max(1, int(math.ceil(fraction * n)))
    start = n - keep if code[axis] == "S" else 0
    index, size = [0, 0, 0], list(image.GetSize())
    index[axis], size[axis] = start, keep
    return sitk.RegionOfInterest(image, size, index)


def _finer(image, is_label: bool):
    import SimpleITK as sitk

    spacing = [max(0.5, s / 2) for s in image.GetSpacing()]
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    # keep the physical extent: the first voxel centre moves by half the old minus half the new spacing
    origin = image.TransformContinuousIndexToPhysicalPoint([-0.5 + 0.5 * t / s for s, t in zip(image.GetSpacing(), spacing)])
    interp = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    out = sitk.Resample(image, size, sitk.Transform(), interp, origin, spacing, image.GetDirection(), 0 if is_label else -1024,
                        image.GetPixelID())
    return out


def reframe(image, variant: str, is_label: bool):
    """One variant of a SimpleITK image."""
    import SimpleITK as sitk

    if variant == "original":
        return image
    if variant == "reoriented":
        return sitk.DICOMOrient(image, OTHER_ORIENTATION)
    if variant == "upper60":
        return _upper(image, 0.6)
    if variant == "finer":
        return _finer(image, is_label)
    raise ValueError(f"unknown variant {variant!r}; valid: {VARIANTS}")


def write_variants(data_dir: Path, out_dir: Path,
                   variants: tuple[str, ...] = VARIANTS + tuple(LONG_VARIANTS)) -> list[Path]:
    """Write `out_dir/<variant>/{imagesTr,labelsTr}` for every case of `data_dir`; return the variant folders."""
    import SimpleITK as sitk

    from abdoseg.training.data import find_cases

    folders = []
    for variant in variants:
        folder = Path(out_dir) / variant
        (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
        (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
        for case in find_cases(Path(data_dir)):
            image, label = sitk.ReadImage(str(case.image)), sitk.ReadImage(str(case.label))
            if variant in LONG_VARIANTS:
                pair = _long(image, label, *LONG_VARIANTS[variant])
                if pair is None:
                    continue
                image, label = pair
            else:
                image, label = reframe(image, variant, False), reframe(label, variant, True)
            sitk.WriteImage(image, str(folder / "imagesTr" / case.image.name))
            sitk.WriteImage(label, str(folder / "labelsTr" / case.label.name))
        folders.append(folder)
    return folders


def _long(image, label, below_mm: float, above_mm: float):
    """A long variant, or None for a scan without organ-free slices to extend it with."""
    from abdoseg.training.long_scans import long_scan

    try:
        return long_scan(image, label, below_mm, above_mm)
    except ValueError:
        return None
