"""The fine stage: coarse labels → organ crop → fine U-Net → labels on the full canonical grid.

Load once, run many: `FineStage.load(weights_dir, device)` reads the card and weights; `run` takes one scan.
This module imports torch only inside `load`/`run`, so `import abdoseg.inference.fine` works without torch.

Order of `run` (each stage timed; on CUDA the device is synchronised before each clock read):
  crop      bounding box of the coarse organs + margin (card) on the full grid; no organ → whole scan
  preprocess crop → fine grid (anti-aliased linear) → HU windows            (abdoseg.inference.fine.preprocess)
  network   sliding window, Gaussian weights, step from the card, fp16 autocast on CUDA; argmax on the fine grid
  cleanup   the card's component rules on the fine grid, with its true spacing (min_ml, near_mm in mm)
  resize    nearest, fine grid → the crop's full-resolution grid (as the torch-free stage, graph_stage.py)
  paste     crop labels into a background volume of the full grid
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from abdoseg.inference.card import WEIGHTS_DIR, Spacing3
from abdoseg.inference.fine.card import FINE_CARD_NAME, FineCard, load_fine_card
from abdoseg.inference.fine.crop import CropBox, organ_box, paste

if TYPE_CHECKING:
    import torch


def fine_weights_missing(weights: Path = WEIGHTS_DIR) -> str | None:
    """None when `weights` (a folder holding fine.json, or the card) has a fine card and the weights file it
    names; otherwise why not, in words for the model line."""
    path = Path(weights)
    card = path / FINE_CARD_NAME if path.is_dir() else path
    shipped = card.parent.resolve() == WEIGHTS_DIR
    where = "shipped (abdoseg/weights/fine.json, fine.pt)" if shipped else f"in {card.parent}"
    if not card.is_file():
        return f"no fine weights are {where}"
    try:
        import json

        weights_file = card.parent / str(json.loads(card.read_text())["weights_file"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a card that cannot be read: loading it says why
    return None if weights_file.is_file() else f"no fine weights are {where}: {weights_file.name} is absent"


def fine_available(weights: Path = WEIGHTS_DIR) -> bool:
    """True when torch imports, sees a CUDA device, and `weights` holds a fine card (fine.json)."""
    card = Path(weights) / FINE_CARD_NAME if Path(weights).is_dir() else Path(weights)
    if not card.is_file():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _check_device(device: str) -> str:
    import torch

    kind = str(device).split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"fine stage device must be 'cpu' or 'cuda', got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"fine stage device {device!r} requested but torch sees no CUDA device")
    return str(device)


@dataclass(frozen=True)
class FineStage:
    """A loaded fine model on one device. Build with `load` (weights folder) or `from_network` (tests)."""

    card: FineCard
    network: "torch.nn.Module"
    device: str

    @property
    def description(self) -> str:
        import torch

        return f"torch {torch.__version__} {self.device}, sliding windows"

    @classmethod
    def load(cls, weights: Path, device: str) -> "FineStage":
        """Read `weights`/fine.json (or a card path) and its weights file (state dict), checksum checked."""
        import torch

        from abdoseg.networks.fine_unet import build_network

        device = _check_device(device)
        card, weights_path = load_fine_card(Path(weights))
        network = build_network(card.architecture)
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            network.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(f"{weights_path}: cannot load fine weights for the card's architecture: {e}") from e
        return cls.from_network(card, network, device)

    @classmethod
    def from_network(cls, card: FineCard, network: "torch.nn.Module", device: str) -> "FineStage":
        """Wrap an already built network (moved to `device` in place, eval mode)."""
        device = _check_device(device)
        return cls(card=card, network=network.to(device).eval(), device=device)

    def run(self, ct: np.ndarray, spacing: Spacing3, coarse: np.ndarray) -> tuple[np.ndarray, dict]:
        """uint8 labels (the card's label set) on the full canonical grid of `ct`, and per-stage seconds and memory
        figures.

        ct: canonical full-resolution HU [z, y, x] (any real dtype); spacing: (z, y, x) mm; coarse: labels of
        the coarse model on the same grid. Info keys: seconds {crop,preprocess,network,cleanup,resize,paste,total}_s
        (the first six add up to total_s); crop_voxels, grid_voxels (fine grid), windows (sliding windows run),
        no_organ (1.0: no coarse organ, the whole scan was used), labels (the nonzero labels of the result);
        on CUDA also gpu_peak_allocated_bytes (torch allocator peak during this call) and gpu_in_use_bytes
        (device memory in use, all processes, at the end of the call).
        """
        import torch

        from abdoseg.inference.fine.graph_stage import labels_present
        from abdoseg.inference.fine.grid import grid_spacing, resize_maps
        from abdoseg.inference.fine.preprocess import prepare_image
        from abdoseg.inference.fine.sliding import sliding_window_logits
        from abdoseg.inference.grid.geometry import upsample_labels
        from abdoseg.inference.postprocess import keep_largest_components

        _check_inputs(ct, spacing, coarse)
        cuda = self.device.startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        clock = _Clock(lambda: torch.cuda.synchronize(self.device) if cuda else None)
        info: dict = {}

        box = organ_box(coarse, spacing, self.card.margin_mm)
        no_organ = box is None
        box = CropBox.whole(ct.shape) if box is None else box  # type: ignore[arg-type]
        info["crop_s"] = clock.lap()
        with torch.inference_mode():
            image = prepare_image(ct[box.slices], spacing, self.card.spacing, self.card.windows, self.device,
                                  self.card.global_intensity)
            info["preprocess_s"] = clock.lap()
            logits, windows = sliding_window_logits(
                self.network, image, self.card.patch_size, self.card.architecture.n_classes, self.card.step, fp16=cuda
            )
            del image
            classes = logits.max(dim=0).indices.to(torch.uint8).cpu().numpy()  # ties -> lowest class, as argmax
            del logits
            info["network_s"] = clock.lap()
        grid = tuple(classes.shape)
        classes = keep_largest_components(classes, self.card.keep_components,
                                          spacing=grid_spacing(box.shape, spacing, grid))
        info["cleanup_s"] = clock.lap()
        crop_labels = upsample_labels(classes, resize_maps(box.shape, grid))
        grid_voxels = float(classes.size)
        info["resize_s"] = clock.lap()
        labels = paste(crop_labels, box)
        info["paste_s"] = clock.lap()
        info["total_s"] = clock.total()
        info.update(_geometry_info(box, grid_voxels, windows, no_organ), labels=labels_present(classes))
        if cuda:
            free, total = torch.cuda.mem_get_info(self.device)
            info["gpu_peak_allocated_bytes"] = float(torch.cuda.max_memory_allocated(self.device))
            info["gpu_in_use_bytes"] = float(total - free)
        return labels, info


def _check_inputs(ct: np.ndarray, spacing: Spacing3, coarse: np.ndarray) -> None:
    if ct.ndim != 3 or ct.shape != coarse.shape:
        raise ValueError(f"ct and coarse labels must be 3D arrays of one shape, got {ct.shape} and {coarse.shape}")
    if not (np.issubdtype(ct.dtype, np.integer) or np.issubdtype(ct.dtype, np.floating)):
        raise ValueError(f"ct must hold real numbers, got dtype {ct.dtype}")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive mm values (z, y, x), got {spacing!r}")


def _geometry_info(box: CropBox, grid_voxels: float, windows: int, no_organ: bool) -> dict[str, float]:
    return {
        "crop_voxels": float(np.prod(box.shape)),
        "grid_voxels": grid_voxels,
        "windows": float(windows),
        "no_organ": float(no_organ),
    }


class _Clock:
    """Lap timer; `sync` runs before each reading (CUDA work is asynchronous)."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self._sync()
        self._start = self._last = time.perf_counter()

    def lap(self) -> float:
        self._sync()
        now = time.perf_counter()
        lap, self._last = now - self._last, now
        return lap

    def total(self) -> float:
        return self._last - self._start
