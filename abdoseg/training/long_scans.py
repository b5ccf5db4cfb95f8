"""Long scans built from real ones: the abdomen with organ-free slices appended below and/or above it.

The only labelled scans here are abdomen-length, so chest-abdomen-pelvis and whole-body lengths are made from
them: the scan's own organ-free slices (for abdpelvis3mm, the pelvis below the kidneys) are mirrored and
repeated (numpy "symmetric" padding) on either side until the wanted length. Image and labels are extended
alike, the original voxels keep their physical positions, and the result can be re-stored in any orientation.
Used by the locator's training (abdoseg.training.locator), the `reframe` variants, the tests and the benchmark.
"""
from __future__ import annotations

import numpy as np

CANONICAL = "RAS"  # canonical arrays: axis 0 grows toward the head (abdoseg.inference.grid.orientation)


def filler_slices(labels: np.ndarray, gap: int = 2) -> slice:
    """The organ-free slices below the lowest organ slice of a canonical label array (minus a `gap`)."""
    organ = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    first = int(organ[0]) if organ.size else labels.shape[0]
    return slice(0, max(0, first - gap))


def extend_arrays(hu: np.ndarray, labels: np.ndarray, below: int, above: int,
                  filler: slice) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (hu, labels) with `below` / `above` slices of mirrored filler appended (labels 0 there)."""
    block = hu[filler]
    if block.shape[0] == 0 and (below or above):
        raise ValueError("the scan has no organ-free slices to extend it with")
    parts_hu, parts_lab = [], []
    if below:
        parts_hu.append(np.pad(block, ((below, 0), (0, 0), (0, 0)), mode="symmetric")[:below])
        parts_lab.append(np.zeros((below, *labels.shape[1:]), labels.dtype))
    parts_hu.append(hu)
    parts_lab.append(labels)
    if above:
        parts_hu.append(np.pad(block[::-1], ((0, above), (0, 0), (0, 0)), mode="symmetric")[-above:])
        parts_lab.append(np.zeros((above, *labels.shape[1:]), labels.dtype))
    return np.concatenate(parts_hu), np.concatenate(parts_lab)


def long_scan(image, label, below_mm: float, above_mm: float, keep: slice | None = None):
    """(image, label) SimpleITK pair: `keep` canonical slices of the scan (default all) with `below_mm` /
    `above_mm` of organ-free slices appended; stored canonical (RAS), original voxels at their positions."""
    import SimpleITK as sitk

    img, lab = sitk.DICOMOrient(image, CANONICAL), sitk.DICOMOrient(label, CANONICAL)
    hu, labels = sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(lab)
    filler = filler_slices(labels)
    keep = keep or slice(0, hu.shape[0])
    start = keep.start or 0
    sz = img.GetSpacing()[2]
    below, above = int(round(below_mm / sz)), int(round(above_mm / sz))
    hu2, lab2 = extend_arrays(hu[keep], labels[keep], below, above, filler)
    origin = img.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, float(start - below)))
    out = []
    for array, ref in ((hu2, img), (lab2, lab)):
        o = sitk.GetImageFromArray(np.ascontiguousarray(array))
        o.SetSpacing(ref.GetSpacing())
        o.SetDirection(ref.GetDirection())
        o.SetOrigin(origin)
        out.append(o)
    return out[0], out[1]


def organ_free_scan(image, label):
    """(image, label): only the organ-free slices of a scan (e.g. the pelvis of abdpelvis3mm)."""
    import SimpleITK as sitk

    labels = sitk.GetArrayFromImage(sitk.DICOMOrient(label, CANONICAL))
    filler = filler_slices(labels)
    return long_scan(image, label, 0.0, 0.0, keep=slice(0, filler.stop))
