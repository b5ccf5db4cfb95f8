"""2D training data: axial slices of the canonical scans, resampled in-plane, and a batch sampler.

Each case is read as the pipeline reads it (abdoseg.training.data.read_canonical: canonical orientation, int16 HU)
and resampled in-plane only — the inference slice graph's resample (abdoseg.inference.graph.slice_graph: every axial
slice kept, each anti-aliased onto [H, W], exactly what a "slices" card's graph does); labels follow by nearest
neighbour on the same voxel centres. Classes are the FLARE21 labels (0 background, 1 liver, 2 kidneys,
3 spleen, 4 pancreas). Volumes are cached as .npz beside the run.

The sampler draws random axial slices (optionally random crops of them); a fixed share of every batch is
forced to contain foreground, nnU-Net's way (the last round(B·f) samples of a batch; seed 003: f = 1/3).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from abdoseg.inference.card import Geometry, Window, ZScore
from abdoseg.training.data import Case, cache_key, read_canonical

N_SLICE_CLASSES = 5


@dataclass
class SliceVolume:
    """One case on the slice grid: HU float32 [Nz, H, W] and labels uint8 [Nz, H, W]."""

    case: str
    hu: np.ndarray
    labels: np.ndarray


class SliceResampler:
    """The inference slice graph's in-plane resample (abdoseg.inference.graph.slice_graph) in an onnxruntime session:
    canonical int16 HU [D,H,W] -> float32 HU [D,*hw]."""

    def __init__(self, hw: tuple[int, int]) -> None:
        import onnxruntime as ort

        from abdoseg.inference.graph.slice_graph import build_slice_resample_graph

        self.geometry = Geometry("slices", (1, *hw))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(build_slice_resample_graph(self.geometry).SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        ct = np.ascontiguousarray(np.rint(hu) if hu.dtype.kind == "f" else hu, dtype=np.int16)
        return self.session.run(["hu"], {"ct": ct})[0]


def inplane_volume(case: Case, hw: tuple[int, int], orientation: str = "RAS") -> SliceVolume:
    """Read a case and resample each axial slice onto `hw` with the inference slice graph's resample."""
    from abdoseg.inference.grid.geometry import axis_maps, downsample_labels

    hu, labels, spacing = read_canonical(case, orientation)
    resampler = SliceResampler(hw)
    low_labels = downsample_labels(labels, axis_maps(hu.shape, spacing, resampler.geometry))
    return SliceVolume(case.name, resampler(hu), np.ascontiguousarray(low_labels, dtype=np.uint8))


def load_slice_volumes(cases: list[Case], hw: tuple[int, int], cache_dir: Path) -> list[SliceVolume]:
    """Slice-grid volumes of every case, computed once and cached as .npz in `cache_dir` (atomic writes)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    volumes = []
    for case in cases:
        key = cache_key((case.image, case.label), ["slices/2", list(hw)])
        path = cache_dir / f"{case.name}.slices{hw[0]}x{hw[1]}.{key}.npz"
        if path.is_file():
            with np.load(path) as z:
                volumes.append(SliceVolume(case.name, z["hu"], z["labels"]))
            continue
        volume = inplane_volume(case, hw)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, hu=volume.hu, labels=volume.labels)
        tmp.replace(path)
        volumes.append(volume)
    return volumes


@dataclass(frozen=True)
class Intensity:
    """HU → network channels: HU windows to [0, 1], or nnU-Net's CT scheme (clip to the training set's
    foreground 0.5/99.5 percentiles, then z-score with its foreground mean and standard deviation)."""

    windows: tuple[Window, ...] = ()
    clip: tuple[float, float] | None = None
    mean: float = 0.0
    std: float = 1.0

    @property
    def n_channels(self) -> int:
        return len(self.windows) or 1

    def __call__(self, hu: torch.Tensor) -> torch.Tensor:
        """HU [B, H, W] → [B, C, H, W] float32."""
        hu = hu.float()
        if self.windows:
            return torch.stack([((hu - w.low) / w.width).clamp(0.0, 1.0) for w in self.windows], dim=1)
        if self.clip is not None:
            hu = hu.clamp(*self.clip)
        return ((hu - self.mean) / self.std).unsqueeze(1)

    def card_fields(self) -> tuple[tuple[Window, ...], ZScore | None]:
        """The card's `windows` and `zscore` with which the slice graph computes this normalisation."""
        if self.windows:
            return self.windows, None
        lo, hi = self.clip if self.clip is not None else (-1e6, 1e6)
        return (Window(level=(lo + hi) / 2, width=hi - lo),), ZScore(self.mean, self.std)

    @classmethod
    def from_card(cls, windows: tuple[Window, ...], zscore: ZScore | None) -> Intensity:
        """The normalisation a card's `windows` and `zscore` describe (the clip range read from its window)."""
        if zscore is None:
            return cls(windows=tuple(windows))
        (w,) = windows
        return cls(clip=(w.low, w.high), mean=zscore.mean, std=zscore.std)

    @classmethod
    def ct_zscore(cls, volumes: list[SliceVolume]) -> Intensity:
        """nnU-Net's CT normalisation with the statistics of the volumes' foreground voxels."""
        fg = np.concatenate([v.hu[v.labels > 0].ravel() for v in volumes])
        if fg.size == 0:
            raise ValueError("CT normalisation needs foreground voxels; the training volumes have none")
        lo, hi = np.percentile(fg, [0.5, 99.5])
        fg = np.clip(fg, lo, hi)
        return cls(clip=(float(lo), float(hi)), mean=float(fg.mean()), std=float(max(fg.std(), 1e-6)))


class SliceSampler:
    """Random batches of axial slices (HU [B, h, w] float32, labels [B, h, w] int64) from slice volumes."""

    def __init__(self, volumes: list[SliceVolume], batch_size: int, foreground_fraction: float = 1 / 3,
                 crop: tuple[int, int] | None = None, seed: int = 0) -> None:
        if not volumes:
            raise ValueError("no volumes to sample slices from")
        hw = volumes[0].hu.shape[1:]
        if crop is not None and (crop[0] > hw[0] or crop[1] > hw[1]):
            raise ValueError(f"crop {crop} is larger than the slices {hw}")
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must lie in [0, 1], got {foreground_fraction}")
        self.volumes, self.batch_size, self.crop = volumes, batch_size, crop
        self.n_forced = batch_size - round(batch_size * (1 - foreground_fraction))
        self.rng = np.random.default_rng(seed)
        self.foreground = [np.argwhere(v.labels > 0) for v in volumes]  # [k, 3] voxel indices per volume

    def _pick(self, forced: bool) -> tuple[int, int, int, int]:
        """(volume, slice, y0, x0) of one sample."""
        candidates = [i for i, fg in enumerate(self.foreground) if len(fg)] if forced else []
        if forced and candidates:
            v = int(self.rng.choice(candidates))
            z, y, x = self.foreground[v][self.rng.integers(len(self.foreground[v]))]
        else:
            v = int(self.rng.integers(len(self.volumes)))
            z, y, x = (int(self.rng.integers(n)) for n in self.volumes[v].hu.shape)
        if self.crop is None:
            return v, int(z), 0, 0
        (h, w), (ch, cw) = self.volumes[v].hu.shape[1:], self.crop
        if forced and candidates:  # a crop holding the foreground voxel, placed at random around it
            y0 = int(self.rng.integers(max(0, y - ch + 1), min(y, h - ch) + 1))
            x0 = int(self.rng.integers(max(0, x - cw + 1), min(x, w - cw) + 1))
        else:
            y0, x0 = int(self.rng.integers(h - ch + 1)), int(self.rng.integers(w - cw + 1))
        return v, int(z), y0, x0

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        hus, labels = [], []
        for b in range(self.batch_size):
            v, z, y0, x0 = self._pick(forced=b >= self.batch_size - self.n_forced)
            vol = self.volumes[v]
            h, w = self.crop or vol.hu.shape[1:]
            hus.append(vol.hu[z, y0:y0 + h, x0:x0 + w])
            labels.append(vol.labels[z, y0:y0 + h, x0:x0 + w])
        return torch.from_numpy(np.stack(hus)).float(), torch.from_numpy(np.stack(labels)).long()
