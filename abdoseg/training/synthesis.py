"""Label-driven synthesis for CT: training images drawn from deformed structure maps (SynthSeg-style).

SynthSeg (Billot et al., Medical Image Analysis 2023) trains on images generated from label maps: structures are
grouped into generation classes, each class gets a random intensity distribution, the map is deformed, and the
acquisition is simulated (blur, resolution, noise). For CT the intensities are physical, so here each class's
mean HU is drawn from a CT-plausible range of a contrast phase (non-contrast, arterial, portal venous), and the
enhancing tissues (vessels, kidneys, liver, spleen, pancreas, ...) move together: one enhancement level per
image places each of them in its range, with a small jitter of its own. The acquisition steps follow nnU-Net's
batchgeneratorsv2 (Gaussian blur, simulated low resolution, Gaussian noise).

One synthetic crop (`synthetic_crop`), on the model grid:
1. one sampling grid: the training affine (abdoseg.training.augment) plus a smooth elastic displacement; the
   structure map (nearest), the real scan's classes (nearest) and its HU (linear) are all read through it, so
   image and labels share one deformation;
2. generation classes: each structure's tissue (`TISSUES`); voxels no structure covers take theirs from the real
   HU (gas, fat, soft tissue, dense) inside the body, air outside;
3. a phase and an enhancement level -> one mean HU per tissue, plus a texture (per-voxel spread) per tissue;
4. partial volume and the simulated slice thickness / in-plane resolution as an anisotropic Gaussian blur, a
   simulated low resolution (down nearest, up linear), then noise;
5. the training classes from the deformed structure map (abdoseg.training.structures), then the existing
   intensity augmentation and thin-slab framing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from abdoseg.training.augment import AIR_HU, AugmentConfig, crop_grid, intensity_augment, random_matrix, thin_slab
from abdoseg.training.structures import TOTAL_TO_LABELS, StructureSample

PHASES = ("non_contrast", "arterial", "portal_venous")
HURange = tuple[float, float]


@dataclass(frozen=True)
class Tissue:
    """A generation class: TotalSegmentator "total" ids, mean-HU range per phase (PHASES order), and whether it
    enhances with contrast (drawn with the image's shared enhancement level)."""

    name: str
    ids: tuple[int, ...]
    hu: tuple[HURange, HURange, HURange]
    enhances: bool = False


def _same(lo: float, hi: float) -> tuple[HURange, HURange, HURange]:
    return ((lo, hi),) * 3


_BONES = (25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50,
          69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 91, *range(92, 117))
#: Mean HU per phase: non-contrast, arterial, portal venous (typical adult abdominal CT values).
TISSUES: tuple[Tissue, ...] = (
    Tissue("liver", (5,), ((45, 65), (55, 85), (90, 135)), True),
    Tissue("spleen", (1,), ((38, 55), (80, 160), (100, 140)), True),
    Tissue("kidney", (2, 3), ((25, 40), (130, 230), (140, 210)), True),
    Tissue("pancreas", (7,), ((30, 50), (85, 135), (75, 115)), True),
    Tissue("artery", (52, 54, 55, 56, 57, 58, 65, 66), ((35, 50), (220, 450), (130, 210)), True),
    Tissue("vein", (53, 59, 60, 62, 63, 67, 68), ((35, 50), (60, 140), (110, 180)), True),
    Tissue("portal_vein", (64,), ((35, 50), (80, 160), (140, 220)), True),
    Tissue("heart", (51, 61), ((35, 50), (150, 350), (110, 170)), True),
    Tissue("adrenal", (8, 9), ((20, 40), (50, 90), (50, 85)), True),
    Tissue("gland", (17, 22), ((35, 60), (80, 160), (80, 140)), True),
    Tissue("bowel", (6, 15, 18, 19, 20), ((10, 45), (25, 70), (35, 80)), True),
    Tissue("muscle", (80, 81, 82, 83, 84, 85, 86, 87, 88, 89), ((40, 60), (45, 70), (50, 75)), True),
    Tissue("fluid", (4, 21, 23, 24), _same(-5, 20)),
    Tissue("lung", (10, 11, 12, 13, 14), _same(-900, -750)),
    Tissue("airway", (16,), _same(-1000, -900)),
    Tissue("bone", _BONES, _same(250, 700)),
    Tissue("cartilage", (117,), _same(80, 200)),
    Tissue("neural", (79, 90), _same(25, 45)),
)
#: Voxels no structure covers: inside the body, by the real scan's HU; outside it, air.
UNLABELLED: tuple[tuple[Tissue, float], ...] = (  # (tissue, upper HU bound of the real voxels it takes)
    (Tissue("gas", (), _same(-1000, -850)), -400.0),
    (Tissue("fat", (), _same(-120, -80)), -20.0),
    (Tissue("soft_tissue", (), ((20, 50), (25, 60), (30, 70)), True), 150.0),
    (Tissue("dense", (), _same(150, 500)), math.inf),
)
AIR = Tissue("air", (), _same(-1024, -990))
ALL_TISSUES: tuple[Tissue, ...] = (AIR, *TISSUES, *(t for t, _ in UNLABELLED))


@dataclass(frozen=True)
class SynthConfig:
    """How often a crop is synthetic, and the ranges of the synthesis. Probabilities are per crop."""

    p: float = 0.0  # share of training crops that are synthetic (0: none)
    phases: tuple[str, ...] = PHASES
    enhancement_jitter: float = 0.15  # each enhancing tissue's own spread around the shared level (0..1 scale)
    texture_hu: tuple[float, float] = (2.0, 12.0)  # per-voxel spread within a tissue
    elastic_vox: float = 1.5  # std of the control-point displacements, model-grid voxels
    elastic_points: int = 5  # control points per axis of the crop
    partial_volume_vox: tuple[float, float] = (0.3, 0.8)  # blur sigma of tissue boundaries, model-grid voxels
    thickness_mm: tuple[float, float] = (0.6, 6.0)  # simulated slice thickness (FWHM of the z blur)
    inplane_mm: tuple[float, float] = (0.5, 1.5)  # simulated in-plane resolution (FWHM of the y, x blur)
    low_resolution_p: float = 0.2
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)
    noise_hu: tuple[float, float] = (0.0, 20.0)

    def __post_init__(self) -> None:
        unknown = set(self.phases) - set(PHASES)
        if not self.phases or unknown:
            raise ValueError(f"phases must be a non-empty subset of {PHASES}, got {self.phases}")
        for name in ("p", "low_resolution_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")


@dataclass(frozen=True)
class SyntheticCrop:
    """A synthetic training crop: HU and classes [D, H, W], its generation classes, and the phase drawn."""

    hu: torch.Tensor
    classes: torch.Tensor
    tissues: torch.Tensor  # index into ALL_TISSUES per voxel
    phase: str
    means: dict[str, float]  # the mean HU drawn for each tissue


def tissue_lut() -> np.ndarray:
    """Structure id (0..255) -> index into ALL_TISSUES; 0 (and ids of no tissue) -> -1 (unlabelled)."""
    lut = np.full(256, -1, np.int64)
    for index, tissue in enumerate(ALL_TISSUES):
        lut[list(tissue.ids)] = index
    return lut


_LUT = torch.from_numpy(tissue_lut())


def generation_classes(structures: torch.Tensor, real_hu: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
    """Index into ALL_TISSUES of every voxel: its structure's tissue, else by real HU inside the body, else air."""
    out = _LUT[structures.long()]
    free = out < 0
    bounds = torch.tensor([b for _, b in UNLABELLED[:-1]], dtype=real_hu.dtype)
    by_hu = torch.bucketize(real_hu, bounds, right=True) + 1 + len(TISSUES)
    out = torch.where(free & body, by_hu, out)
    return torch.where(out < 0, torch.zeros_like(out), out)


def draw_means(rng: np.random.Generator, cfg: SynthConfig) -> tuple[str, np.ndarray]:
    """A phase and one mean HU per tissue of ALL_TISSUES; enhancing tissues share one enhancement level."""
    phase = cfg.phases[int(rng.integers(len(cfg.phases)))]
    column = PHASES.index(phase)
    level = rng.uniform()
    means = np.empty(len(ALL_TISSUES))
    for index, tissue in enumerate(ALL_TISSUES):
        lo, hi = tissue.hu[column]
        share = np.clip(level + rng.normal(0.0, cfg.enhancement_jitter), 0, 1) if tissue.enhances else rng.uniform()
        means[index] = lo + share * (hi - lo)
    return phase, means


def elastic_offsets(volume_shape: tuple[int, ...], crop_shape: tuple[int, ...], rng: np.random.Generator,
                    cfg: SynthConfig) -> torch.Tensor:
    """A smooth random displacement of a crop's sampling grid, [1, d, h, w, 3] in grid_sample's (x, y, z)
    normalised units: control-point displacements (voxels) upsampled linearly to the crop."""
    k = cfg.elastic_points
    control = torch.from_numpy(rng.normal(0.0, cfg.elastic_vox, (1, 3, k, k, k))).float()  # (z, y, x) voxels
    field = F.interpolate(control, size=tuple(crop_shape), mode="trilinear", align_corners=True)[0]
    scale = torch.tensor([2.0 / max(n - 1, 1) for n in volume_shape]).view(3, 1, 1, 1)
    return (field * scale).permute(1, 2, 3, 0).flip(-1).unsqueeze(0)


def blur_axes(image: torch.Tensor, sigmas: tuple[float, float, float]) -> torch.Tensor:
    """Separable Gaussian blur of a [D, H, W] volume with one sigma (voxels) per axis (replicate padding)."""
    out = image[None, None]
    for axis, sigma in enumerate(sigmas):
        if sigma < 0.05:
            continue
        radius = max(1, math.ceil(3 * sigma))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), (kernel / kernel.sum()).view(shape))
    return out[0, 0]


def acquire(image: torch.Tensor, inside: torch.Tensor, rng: np.random.Generator, cfg: SynthConfig,
            spacing_mm: tuple[float, float, float]) -> torch.Tensor:
    """Partial volume, slice thickness and in-plane resolution (one anisotropic blur), low resolution, noise;
    all within the scan (`inside`): as in the resample graph, nothing mixes across the scan's edge, and the
    canvas's padding stays exactly AIR_HU."""
    pv = rng.uniform(*cfg.partial_volume_vox)
    fwhm = (rng.uniform(*cfg.thickness_mm), *(rng.uniform(*cfg.inplane_mm),) * 2)
    sigmas = tuple(math.hypot(pv, f / 2.3548 / s) for f, s in zip(fwhm, spacing_mm))
    weight = inside.float()
    out = blur_axes(image * weight, sigmas) / blur_axes(weight, sigmas).clamp(min=1e-3)
    if rng.random() < cfg.low_resolution_p:
        size = out.shape
        low = [max(1, round(n * rng.uniform(*cfg.low_resolution_zoom))) for n in size]
        out = F.interpolate(F.interpolate(out[None, None], size=low, mode="nearest"), size=size,
                            mode="trilinear", align_corners=False)[0, 0]
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    out = out + torch.randn(out.shape, generator=generator) * float(rng.uniform(*cfg.noise_hu))
    return torch.where(inside, out, torch.full_like(out, AIR_HU))


def render(tissues: torch.Tensor, means: np.ndarray, rng: np.random.Generator, cfg: SynthConfig) -> torch.Tensor:
    """Piecewise-constant HU of the generation classes plus a per-tissue texture (Gaussian, its own spread)."""
    spread = torch.from_numpy(rng.uniform(*cfg.texture_hu, len(ALL_TISSUES))).float()
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    texture = torch.randn(tissues.shape, generator=generator) * spread[tissues]
    return torch.from_numpy(means).float()[tissues] + texture


def classes_from_structures(structures: torch.Tensor, body: torch.Tensor, labelset: str) -> torch.Tensor:
    """Training classes of a structure map: 0 air, 1 body, label + 1 for each organ of the label set."""
    lut = torch.zeros(256, dtype=torch.long)
    for structure, label in TOTAL_TO_LABELS[labelset].items():
        lut[structure] = label + 1
    organs = lut[structures.long()]
    return torch.where(organs > 0, organs, body.long())


def synthetic_crop(source: StructureSample, center: np.ndarray, crop_shape: tuple[int, int, int],
                   rng: np.random.Generator, cfg: SynthConfig, augment: AugmentConfig, labelset: str,
                   spacing_mm: tuple[float, float, float]) -> SyntheticCrop:
    """One synthetic crop of `crop_shape` around `center` (z, y, x model-grid voxels) of a structure sample."""
    shape = tuple(source.structures.shape)
    jitter = np.array([rng.uniform(-s, s) for s in augment.shift_vox])
    grid = crop_grid(shape, crop_shape, np.asarray(center, float) + jitter, random_matrix(rng, augment))
    grid = grid + elastic_offsets(shape, crop_shape, rng, cfg)

    def nearest(volume: np.ndarray) -> torch.Tensor:
        out = F.grid_sample(torch.from_numpy(volume).float()[None, None], grid, mode="nearest", padding_mode="zeros",
                            align_corners=True)
        return out[0, 0].round().long()

    structures, body, inside = nearest(source.structures), nearest(source.classes) >= 1, nearest(source.inside) > 0
    real = F.grid_sample((torch.from_numpy(source.hu) - AIR_HU)[None, None], grid, mode="bilinear",
                         padding_mode="zeros", align_corners=True)[0, 0] + AIR_HU
    tissues = generation_classes(structures, real, body)
    phase, means = draw_means(rng, cfg)
    image = acquire(render(tissues, means, rng, cfg), inside, rng, cfg, spacing_mm)
    classes = classes_from_structures(structures, body, labelset)
    image, classes = thin_slab(intensity_augment(image, classes, rng, augment), classes, rng, augment)
    return SyntheticCrop(image, classes, tissues, phase, {t.name: float(m) for t, m in zip(ALL_TISSUES, means)})
