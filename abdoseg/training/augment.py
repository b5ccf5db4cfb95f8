"""Training augmentation on the model grid, in HU, before the HU windows.

One sample = one crop of a cached low-resolution scan: the crop is drawn through a random affine (shift,
in-plane rotation, scale, left/right flip) with trilinear interpolation for HU and nearest for classes, so
image and labels always share the same sampling grid. Intensity changes act on HU: a shift per organ
(each organ class in the crop, so any label set), a global shift, Gaussian noise and Gaussian blur. Field-of-view crops and other
orientations change the resample itself, so they are made at full resolution and cached as scan variants
(abdoseg/training/data.py), not here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

AIR_HU = -1024.0


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentation. Probabilities are per sample."""

    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.8, 1.2)
    shift_vox: tuple[float, float, float] = (4.0, 8.0, 8.0)
    flip_lr: float = 0.0  # off by default: a flip erases the side cue between spleen and liver (measured)
    organ_hu_shift: float = 25.0
    organ_shift_p: float = 0.5
    global_hu_shift: float = 20.0
    noise_p: float = 0.3
    noise_hu: float = 25.0
    blur_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.0)
    slab_p: float = 0.0  # a thin axial slab of the crop kept, air around it: scans of a few cm (off by default)
    slab_vox: tuple[int, int] = (4, 16)  # the slab's thickness in model-grid slices

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale range must be 0 < low <= high, got {self.scale}")
        for name in ("flip_lr", "organ_shift_p", "noise_p", "blur_p", "slab_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")


NO_AUGMENT = AugmentConfig(
    rotate_deg=0.0, scale=(1.0, 1.0), shift_vox=(0.0, 0.0, 0.0), flip_lr=0.0, organ_hu_shift=0.0,
    organ_shift_p=0.0, global_hu_shift=0.0, noise_p=0.0, blur_p=0.0,
)


def crop_grid(
    volume_shape: tuple[int, int, int],
    crop_shape: tuple[int, int, int],
    center: np.ndarray,
    matrix: np.ndarray,
) -> torch.Tensor:
    """Sampling grid for `F.grid_sample` (align_corners=True), shape [1, d, h, w, 3] in (x, y, z) order.

    Crop voxel offsets o (z, y, x, relative to the crop centre) read the volume at `center + matrix @ o`.
    """
    axes = [torch.arange(n, dtype=torch.float64) - (n - 1) / 2 for n in crop_shape]
    offsets = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # [d, h, w, 3] (z, y, x)
    coords = offsets @ torch.as_tensor(matrix, dtype=torch.float64).T + torch.as_tensor(center, dtype=torch.float64)
    size = torch.tensor(volume_shape, dtype=torch.float64)
    normalised = 2.0 * coords / (size - 1).clamp(min=1) - 1.0
    return normalised.flip(-1).unsqueeze(0).float()


def sample_crop(hu: torch.Tensor, classes: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample HU (trilinear, air outside) and classes (nearest, 0 outside) of [D, H, W] volumes on `grid`."""
    shifted = (hu - AIR_HU).float()[None, None]
    image = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0] + AIR_HU
    labels = F.grid_sample(classes.float()[None, None], grid, mode="nearest", padding_mode="zeros", align_corners=True)
    return image, labels[0, 0].round().long()


def random_matrix(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Random (z, y, x) affine: in-plane rotation, isotropic scale, optional left/right (x) flip."""
    angle = math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    scale = rng.uniform(*cfg.scale)
    c, s = math.cos(angle), math.sin(angle)
    m = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]) * scale
    if rng.random() < cfg.flip_lr:
        m = m @ np.diag([1.0, 1.0, -1.0])
    return m


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a [D, H, W] volume (replicate padding)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = image[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = kernel.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), kernel.view(shape))
    return out[0, 0]


def intensity_augment(
    image: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig
) -> torch.Tensor:
    """HU changes: per-organ shifts (each organ class, >= 2, present in the crop: whatever the label set), a global
    shift, noise, blur. Returns a new tensor."""
    out = image.clone()
    for organ in (int(c) for c in torch.unique(labels) if c >= 2):
        if cfg.organ_hu_shift > 0 and rng.random() < cfg.organ_shift_p:
            out[labels == organ] += float(rng.uniform(-cfg.organ_hu_shift, cfg.organ_hu_shift))
    if cfg.global_hu_shift > 0:
        out += float(rng.uniform(-cfg.global_hu_shift, cfg.global_hu_shift))
    if rng.random() < cfg.noise_p:
        generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
        out += torch.randn(out.shape, generator=generator) * float(rng.uniform(0, cfg.noise_hu))
    if rng.random() < cfg.blur_p:
        out = gaussian_blur(out, float(rng.uniform(*cfg.blur_sigma)))
    return out


def thin_slab(image: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator,
              cfg: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """With probability `slab_p`, keep a random run of `slab_vox` axial slices and make the rest air (class 0):
    what the canvas holds for a scan a few centimetres long, which the resample centres with air around it."""
    if cfg.slab_p <= 0 or rng.random() >= cfg.slab_p:
        return image, labels
    depth = image.shape[0]
    thickness = int(rng.integers(cfg.slab_vox[0], cfg.slab_vox[1] + 1))
    if thickness >= depth:
        return image, labels
    start = int(rng.integers(0, depth - thickness + 1))
    outside = torch.ones(depth, dtype=torch.bool)
    outside[start:start + thickness] = False
    image, labels = image.clone(), labels.clone()
    image[outside], labels[outside] = AIR_HU, 0
    return image, labels


def augmented_crop(
    hu: torch.Tensor,
    classes: torch.Tensor,
    center: np.ndarray,
    crop_shape: tuple[int, int, int],
    rng: np.random.Generator,
    cfg: AugmentConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented training crop (HU, classes) of size `crop_shape` around `center` (z, y, x voxels)."""
    jitter = np.array([rng.uniform(-s, s) for s in cfg.shift_vox])
    grid = crop_grid(tuple(hu.shape), crop_shape, np.asarray(center, float) + jitter, random_matrix(rng, cfg))
    image, labels = sample_crop(hu, classes, grid)
    return thin_slab(intensity_augment(image, labels, rng, cfg), labels, rng, cfg)
