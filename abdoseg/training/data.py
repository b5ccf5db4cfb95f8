"""Training data: FLARE/nnU-Net folders -> cached model-grid scans made by the inference preprocessing graph.

A case is read, brought to the canonical orientation (abdoseg.inference.grid.orientation), optionally re-framed at full
resolution (a field-of-view crop: it changes the resample, so it must happen before it), then resampled onto
the model grid by running abdoseg.inference.graph.preprocess_graph's resample graph through onnxruntime — the same
graph the shipped model runs. Labels follow with abdoseg.inference.grid.geometry.downsample_labels (nearest, same voxel
centres). The training classes add "body": HU > -200 after closing and axial hole filling, organs excluded.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from abdoseg.inference.card import Geometry
from abdoseg.inference.labels import DEFAULT_LABELSET, label_map

BODY_HU = -200.0


@dataclass(frozen=True)
class Case:
    """One labelled scan of a FLARE/nnU-Net folder."""

    name: str
    image: Path
    label: Path


@dataclass(frozen=True)
class Crop:
    """A field-of-view re-framing, as fractions of each canonical axis (z, y, x) kept: [start, stop)."""

    name: str
    z: tuple[float, float] = (0.0, 1.0)
    y: tuple[float, float] = (0.0, 1.0)
    x: tuple[float, float] = (0.0, 1.0)
    below_mm: float = 0.0  # long variants: organ-free slices appended below / above first (abdoseg.training.long_scans)
    above_mm: float = 0.0

    @property
    def is_long(self) -> bool:
        return self.below_mm > 0 or self.above_mm > 0

    def slices(self, shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
        """Index slices of a canonical (z, y, x) array; at least one voxel per axis."""
        out = []
        for (lo, hi), n in zip((self.z, self.y, self.x), shape):
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError(f"crop {self.name!r}: fractions must satisfy 0 <= start < stop <= 1, got {(lo, hi)}")
            a = int(math.floor(lo * n + 1e-9))
            out.append(slice(a, max(a + 1, int(math.ceil(hi * n - 1e-9)))))
        return tuple(out)  # type: ignore[return-value]


#: Canonical RAS arrays: z index grows toward the head, so the "upper" part is the end of axis 0.
FULL = Crop("full")
UPPER60 = Crop("upper60", z=(0.4, 1.0))
SHORT_CROPS = (
    FULL,
    UPPER60,
    Crop("lower60", z=(0.0, 0.6)),
    Crop("upper80", z=(0.2, 1.0)),
    Crop("middle70", z=(0.15, 0.85)),
    Crop("inplane80", y=(0.1, 0.9), x=(0.1, 0.9)),
    Crop("lower50", z=(0.0, 0.5)),  # abdpelvis3mm: the pelvis alone, no organ in view
)
#: Long scans: organ-free slices mirrored below / above the scan, the canvas placed so that the organs
#: sit at its top, bottom or middle, cut at its edges, with long-scan context around them. A case without
#: organ-free slices has no long variants (skipped).
LONG_CROPS = (
    Crop("long_top", z=(0.35, 1.0), below_mm=300.0),
    Crop("long_above", z=(0.0, 0.75), above_mm=300.0),
    Crop("long_above_edge", z=(0.25, 0.8), above_mm=300.0),
    Crop("long_both", z=(0.15, 0.85), below_mm=225.0, above_mm=225.0),
    Crop("long_top_cut", z=(0.55, 1.0), below_mm=450.0),
)
TRAIN_CROPS = SHORT_CROPS + LONG_CROPS
CROPS = {c.name: c for c in TRAIN_CROPS}


@dataclass
class Sample:
    """A cached model-grid scan: HU [Nz, Ny, Nx] float32 and training classes (0..5) uint8."""

    case: str
    crop: str
    hu: np.ndarray
    classes: np.ndarray


def find_cases(data_dir: Path) -> list[Case]:
    """Cases of `data_dir/imagesTr/<case>_0000.nii.gz` with `data_dir/labelsTr/<case>.nii.gz`, sorted by name."""
    data_dir = Path(data_dir)
    images = sorted((data_dir / "imagesTr").glob("*_0000.nii.gz"))
    if not images:
        raise ValueError(f"{data_dir}: no imagesTr/<case>_0000.nii.gz files found")
    cases = []
    for image in images:
        name = image.name[: -len("_0000.nii.gz")]
        label = data_dir / "labelsTr" / f"{name}.nii.gz"
        if not label.is_file():
            raise ValueError(f"{label}: label file missing for image {image.name}")
        cases.append(Case(name, image, label))
    return cases


def read_canonical(case: Case, orientation: str = "RAS", labelset: str = DEFAULT_LABELSET
                   ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(HU int16, labels uint8, spacing z,y,x mm) of a case in the canonical array orientation; its labels
    must be ids of `labelset` (abdoseg.inference.labels).

    The HU array is exactly what the inference pipeline feeds its graph (abdoseg.inference.grid.scan.canonical_hu).
    """
    hu, labels, spacing = read_canonical_pair(case.image, case.label, orientation)
    top = label_map(labelset).max_label
    if labels.min() < 0 or labels.max() > top:
        raise ValueError(f"{case.label}: {labelset} labels must lie in 0..{top}, got {labels.min()}..{labels.max()}")
    return hu, labels.astype(np.uint8), spacing


def read_canonical_pair(image: Path, label: Path, orientation: str = "RAS"
                        ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(HU int16, label map as stored, spacing z,y,x mm) in the canonical array orientation; the label map must
    lie on the image's grid. Any label map: FLARE labels, or TotalSegmentator's structure maps (training.structures)."""
    import SimpleITK as sitk

    from abdoseg.inference.grid.scan import Grid, canonical_hu
    from abdoseg.inference.io.read import read_array, read_header

    reader = read_header(image)  # the inference read: a validated 3D scalar scan, or an InputError
    grid, label_image = Grid.of(reader), sitk.ReadImage(str(label))
    same = (
        grid.size == label_image.GetSize()
        and np.allclose(grid.spacing, label_image.GetSpacing(), atol=1e-4)
        and np.allclose(grid.direction, label_image.GetDirection(), atol=1e-4)
    )
    if not same:
        raise ValueError(f"{label}: grid differs from its image {Path(image).name} (size/spacing/direction)")
    hu, spacing, reo = canonical_hu(read_array(reader), grid, orientation)
    labels = np.ascontiguousarray(reo.apply(sitk.GetArrayFromImage(label_image)))
    # canonical_hu may return a read-only view of the read buffer: the cache wants its own writable array
    return np.array(hu, dtype=np.int16, order="C", copy=True), labels, tuple(float(s) for s in spacing)


class Resampler:
    """The inference resample graph (int16 ct -> float32 model-grid HU) in an onnxruntime session."""

    def __init__(self, geometry: Geometry) -> None:
        import onnxruntime as ort

        from abdoseg.inference.graph.preprocess_graph import build_resample_graph

        self.geometry = geometry
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            build_resample_graph(geometry).SerializeToString(), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, hu: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
        feeds = {"ct": np.ascontiguousarray(np.rint(hu) if hu.dtype.kind == "f" else hu, dtype=np.int16)}  # graph input: int16 HU
        if self.geometry.mode == "spacing":
            feeds["spacing"] = np.asarray(spacing, dtype=np.float32)
        return self.session.run(["hu"], feeds)[0]


def body_mask(hu: np.ndarray, threshold: float = BODY_HU) -> np.ndarray:
    """HU > threshold, closed (3×3×3, 2 iterations) and hole-filled slice by slice (axial)."""
    from scipy import ndimage

    mask = ndimage.binary_closing(hu > threshold, structure=np.ones((3, 3, 3), bool), iterations=2, border_value=0)
    return np.stack([ndimage.binary_fill_holes(s) for s in mask])


def training_classes(hu: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Network classes: 0 air, 1 body, 2.. = label + 1 (label 0 inside the body is class 1)."""
    classes = np.where(labels > 0, labels.astype(np.uint8) + 1, 0).astype(np.uint8)
    classes[(labels == 0) & body_mask(hu)] = 1
    return classes


def model_grid_sample(case: Case, crop: Crop, resampler: Resampler, orientation: str = "RAS",
                      labelset: str = DEFAULT_LABELSET) -> Sample:
    """Read, re-frame at full resolution, resample with the inference graph, derive training classes."""
    from abdoseg.inference.grid.geometry import axis_maps, downsample_labels

    hu, labels, spacing = read_canonical(case, orientation, labelset)
    if crop.is_long:
        from abdoseg.training.long_scans import extend_arrays, filler_slices

        below, above = (int(round(mm / spacing[0])) for mm in (crop.below_mm, crop.above_mm))
        hu, labels = extend_arrays(hu, labels, below, above, filler_slices(labels))
    index = crop.slices(hu.shape)
    hu, labels = np.ascontiguousarray(hu[index]), np.ascontiguousarray(labels[index])
    low_hu = resampler(hu, spacing)
    low_labels = downsample_labels(labels, axis_maps(hu.shape, spacing, resampler.geometry))
    return Sample(case.name, crop.name, low_hu, training_classes(low_hu, low_labels))


def cache_key(paths: tuple[Path, ...], settings: list) -> str:
    """Key of a cached sample: each file's path, size and modification time, then the settings (JSON), so an
    edited file or another crop, grid or label set is a new entry."""
    h = hashlib.sha256()
    for path in paths:
        st = path.stat()
        h.update(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def load_samples(
    cases: list[Case], crops: tuple[Crop, ...], geometry: Geometry, cache_dir: Path, labelset: str = DEFAULT_LABELSET
) -> list[Sample]:
    """Model-grid samples of every case × crop, computed once and cached as .npz in `cache_dir`."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    resampler: Resampler | None = None
    samples = []
    for case in cases:
        extendable = any(c.is_long for c in crops) and _has_organ_free_slices(case)
        for crop in crops:
            if crop.is_long and not extendable:
                continue
            key = cache_key((case.image, case.label), [asdict(crop), asdict(geometry)])
            path = cache_dir / f"{case.name}.{crop.name}.{key}.npz"
            if path.is_file():
                with np.load(path) as z:
                    samples.append(Sample(case.name, crop.name, z["hu"], z["classes"]))
                continue
            resampler = resampler or Resampler(geometry)
            sample = model_grid_sample(case, crop, resampler, labelset=labelset)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, hu=sample.hu, classes=sample.classes)
            tmp.replace(path)
            samples.append(sample)
    return samples


def _has_organ_free_slices(case: Case, minimum: int = 5) -> bool:
    """Whether a case's labels leave at least `minimum` organ-free slices at its foot end (long variants need them)."""
    import SimpleITK as sitk

    from abdoseg.training.long_scans import CANONICAL, filler_slices

    labels = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(case.label)), CANONICAL))
    return filler_slices(labels).stop >= minimum


def class_counts(samples: list[Sample], n_classes: int) -> np.ndarray:
    """Voxel count of each class over the samples."""
    return sum(np.bincount(s.classes.ravel(), minlength=n_classes) for s in samples)
