"""TotalSegmentator structure maps (117 structures) on the model grid: the sources of label-driven synthesis.

Each training case may come with TotalSegmentator v2's "total" map (`<case>_total.nii.gz`, ids 1-117, e.g.
1 spleen, 2/3 kidneys, 5 liver, 7 pancreas, 52 aorta, 63 inferior vena cava). It is read on the scan's grid,
brought to the canonical orientation and re-framed like the labels, and taken to the model grid by the same
nearest-neighbour voxel correspondence as the labels (abdoseg.inference.grid.geometry). The FLARE labels are a
lookup of the structure ids (`TOTAL_TO_LABELS`), so the training classes of a structure sample are the ones its
labels file gives (tested on the bundled scans).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from abdoseg.inference.card import Geometry
from abdoseg.training.data import Case, Crop, Resampler, cache_key, read_canonical_pair, training_classes

#: TotalSegmentator v2 "total" ids -> label of each label set (TotalSegmentator's class map, Apache-2.0).
TOTAL_TO_LABELS: dict[str, dict[int, int]] = {
    "flare21": {5: 1, 2: 2, 3: 2, 1: 3, 7: 4},
    "flare22": {5: 1, 2: 2, 1: 3, 7: 4, 52: 5, 63: 6, 8: 7, 9: 8, 4: 9, 15: 10, 6: 11, 19: 12, 3: 13},
}
N_STRUCTURES = 117


@dataclass
class StructureSample:
    """A model-grid scan with its structure map: HU float32, training classes uint8, structure ids uint8, and
    which voxels lie inside the scan (the rest is the canvas's padding, which no acquisition blurs into)."""

    case: str
    crop: str
    hu: np.ndarray
    classes: np.ndarray
    structures: np.ndarray
    inside: np.ndarray


def labels_from_structures(structures: np.ndarray, labelset: str) -> np.ndarray:
    """The label set's labels (uint8) of a structure map; ValueError for a label set without a mapping."""
    if labelset not in TOTAL_TO_LABELS:
        raise ValueError(f"no structure mapping for label set {labelset!r}; valid: {', '.join(TOTAL_TO_LABELS)}")
    lut = np.zeros(256, np.uint8)
    for structure, label in TOTAL_TO_LABELS[labelset].items():
        lut[structure] = label
    return lut[structures]


def structure_file(folder: Path, case: str) -> Path:
    """`folder/<case>_total.nii.gz`, or ValueError naming it when missing."""
    path = Path(folder) / f"{case}_total.nii.gz"
    if not path.is_file():
        raise ValueError(f"{path}: structure map missing for case {case}")
    return path


def structure_sample(case: Case, structures: Path, crop: Crop, resampler: Resampler, labelset: str) -> StructureSample:
    """Read a case's scan and structure map, re-frame, resample like training.data.model_grid_sample."""
    from abdoseg.inference.grid.geometry import axis_maps, downsample_labels

    if crop.is_long:
        raise ValueError(f"crop {crop.name!r}: structure samples take field-of-view crops only")
    hu, ids, spacing = read_canonical_pair(case.image, structures)
    if ids.min() < 0 or ids.max() > N_STRUCTURES:
        raise ValueError(f"{structures}: structure ids must lie in 0..{N_STRUCTURES}, got {ids.min()}..{ids.max()}")
    index = crop.slices(hu.shape)
    hu, ids = np.ascontiguousarray(hu[index]), np.ascontiguousarray(ids[index].astype(np.uint8))
    low_hu = resampler(hu, spacing)
    maps = axis_maps(hu.shape, spacing, resampler.geometry)
    low_ids = downsample_labels(ids, maps)
    classes = training_classes(low_hu, labels_from_structures(low_ids, labelset))
    z, y, x = (m.inside() for m in maps)
    inside = z[:, None, None] & y[None, :, None] & x[None, None, :]
    return StructureSample(case.name, crop.name, low_hu, classes, low_ids, inside)


def load_structure_samples(cases: list[Case], folder: Path, crops: tuple[Crop, ...], geometry: Geometry,
                           cache_dir: Path, labelset: str) -> list[StructureSample]:
    """Structure samples of every case × crop, computed once and cached as .npz in `cache_dir`."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    resampler, samples = None, []
    for case in cases:
        source = structure_file(folder, case.name)
        for crop in crops:
            key = cache_key((case.image, source), [asdict(crop), asdict(geometry), labelset])
            path = cache_dir / f"{case.name}.{crop.name}.total.{key}.npz"
            if path.is_file():
                with np.load(path) as z:
                    samples.append(StructureSample(case.name, crop.name, z["hu"], z["classes"], z["structures"],
                                                   z["inside"]))
                continue
            resampler = resampler or Resampler(geometry)
            sample = structure_sample(case, source, crop, resampler, labelset)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, hu=sample.hu, classes=sample.classes, structures=sample.structures, inside=sample.inside)
            tmp.replace(path)
            samples.append(sample)
    return samples

