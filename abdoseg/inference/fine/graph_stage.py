"""The fine stage without torch: the fine card's ONNX graph in OpenVINO or onnxruntime, on the crop in one forward.

Order of `run` (each stage timed; same figures as the torch stage, abdoseg.inference.fine.stage):
  crop       bounding box of the coarse organs + margin (card) on the full grid; no organ → whole scan
  preprocess crop → fine grid (anti-aliased linear, numpy; abdoseg.inference.fine.grid) → HU windows, padded with
             air up to the network's divisor
  network    one forward of the whole crop: network + ArgMax in the graph → classes on the fine grid. The cobra
             network has BatchNorm only (no instance norm), so windows would be the same model up to their borders,
             at 3-5× the time with the card's patch and step 0.5 (measured: docs/decisions.md)
  cleanup    the card's component rules on the fine grid, with its true spacing (min_ml, near_mm in mm)
  resize     nearest, fine grid → the crop's full-resolution grid (the coarse stage's upsample convention)
  paste      crop labels into a background volume of the full grid
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from abdoseg.inference.card import CardError, Spacing3, read_card_json, verify_file
from abdoseg.inference.fine.card import FINE_CARD_NAME, FineCard
from abdoseg.inference.fine.crop import CropBox, organ_box, paste
from abdoseg.inference.fine.grid import fine_grid_shape, grid_spacing, resample_numpy, resize_maps
from abdoseg.inference.graph.runtime import ModelLoadError, RuntimeName, Session, open_session

#: HU of the padding around the fine grid (air: 0 in every [0, 1] window).
PAD_HU = -1024.0


def network_input(crop: np.ndarray, spacing: Spacing3, card: FineCard) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The graph's "image" [1, C, D, H, W] float32 for a crop of canonical HU (fine grid padded with air at the far
    ends up to the architecture's divisor), and the fine grid's shape (the unpadded part)."""
    shape = fine_grid_shape(crop.shape, spacing, card.spacing)  # type: ignore[arg-type]
    div = card.architecture.divisor
    hu = np.full(tuple(-(-n // div) * div for n in shape), PAD_HU, np.float32)
    hu[:shape[0], :shape[1], :shape[2]] = resample_numpy(crop, shape)
    image = np.empty((1, len(card.windows), *hu.shape), np.float32)
    for c, w in enumerate(card.windows):
        if card.global_intensity is None:
            np.clip((hu - w.low) / w.width, 0.0, 1.0, out=image[0, c])
        else:
            mean, std = card.global_intensity
            image[0, c] = (np.clip(hu, w.low, w.high) - mean) / std
    return image, shape


def labels_present(classes: np.ndarray) -> list[int]:
    """The nonzero labels of `classes` (the fine grid: a few million voxels, not the scan's full grid)."""
    return [int(k) for k in np.flatnonzero(np.bincount(classes.ravel())) if k]


class FineGraphStage:
    """A loaded fine graph on a CPU runtime. Build with `load`; `run` as the torch stage's.

    The graph is compiled once as its file states it (dynamic D, H, W: every crop has its own shape), from the file,
    so that OpenVINO's model cache (--cache-dir, baked into the image by its warm-up) holds the compiled blob; it
    opens in a background thread while the scan is read and the coarse stage runs."""

    def __init__(self, card: FineCard, session: Session | Future) -> None:
        self.card = card
        self._session = session

    @classmethod
    def load(cls, weights: Path, runtime: RuntimeName = "openvino", threads: int = 1,
             cache_dir: Path | None = None) -> "FineGraphStage":
        """Read `weights`/fine.json (or a card path) and start opening the graph it names (sha256 checked now)."""
        path = Path(weights)
        card_path = path / FINE_CARD_NAME if path.is_dir() else path
        card = FineCard.from_dict(read_card_json(card_path, "fine card"))
        if card.network_file is None:
            raise CardError(f"{card_path}: the fine card names no network_file (export it: abdoseg export-fine)")
        graph = card_path.parent / card.network_file
        verify_file(graph, card.network_sha256, f"the fine card {card_path}")
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="abdoseg-fine-load")
        session = pool.submit(open_session, graph, runtime, threads, False, cache_dir, False)
        pool.shutdown(wait=False)
        return cls(card, session)

    @property
    def session(self) -> Session:
        """The runtime session; waits for the background open to finish (ModelLoadError if it failed)."""
        if isinstance(self._session, Future):
            try:
                self._session = self._session.result()
            except Exception as e:  # noqa: BLE001 - whatever the runtime raises for a file it cannot use
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                raise ModelLoadError(f"the fine graph of {self.card.name!r} cannot be opened ({reason})") from e
        return self._session

    @property
    def description(self) -> str:
        return self.session.description

    def run(self, ct: np.ndarray, spacing: Spacing3, coarse: np.ndarray) -> tuple[np.ndarray, dict]:
        """uint8 labels (the card's label set) on the full canonical grid of `ct`, and per-stage seconds.

        ct: canonical full-resolution HU [z, y, x]; spacing: (z, y, x) mm; coarse: the coarse labels on that grid.
        Info keys: {crop,preprocess,network,cleanup,resize,paste,total}_s (the first six add up to total_s),
        crop_voxels, grid_voxels (fine grid), windows (1: one forward), no_organ (1.0: the whole scan was used),
        labels (the nonzero labels of the result).
        """
        from abdoseg.inference.grid.geometry import upsample_labels
        from abdoseg.inference.postprocess import keep_largest_components

        if ct.ndim != 3 or ct.shape != coarse.shape:
            raise ValueError(f"ct and coarse labels must be 3D arrays of one shape, got {ct.shape} and {coarse.shape}")
        t0 = last = time.perf_counter()
        info: dict = {}

        def lap(stage: str) -> None:
            nonlocal last
            now = time.perf_counter()
            info[f"{stage}_s"], last = now - last, now

        box = organ_box(coarse, spacing, self.card.margin_mm)
        no_organ = box is None
        box = CropBox.whole(ct.shape) if box is None else box  # type: ignore[arg-type]
        lap("crop")
        image, shape = network_input(ct[box.slices], spacing, self.card)
        lap("preprocess")
        classes = np.asarray(self.session.run({"image": image}))[:shape[0], :shape[1], :shape[2]]
        del image
        lap("network")
        fine_spacing = grid_spacing(box.shape, spacing, shape)
        classes = keep_largest_components(np.ascontiguousarray(classes), self.card.keep_components,
                                          spacing=fine_spacing)
        lap("cleanup")
        crop_labels = upsample_labels(classes, resize_maps(box.shape, shape))
        lap("resize")
        labels = paste(crop_labels, box)
        lap("paste")
        info["total_s"] = last - t0
        info.update(crop_voxels=float(np.prod(box.shape)), grid_voxels=float(np.prod(shape)), windows=1.0,
                    no_organ=float(no_organ), labels=labels_present(classes))
        return labels, info
