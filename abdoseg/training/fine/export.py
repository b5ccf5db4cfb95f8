"""Export the fine network to ONNX for the torch-free fine stage (abdoseg.inference.fine.graph_stage).

The file takes "image" [1, C, D, H, W] (the HU windows on the fine grid, D, H, W any multiples of the architecture's
divisor) and gives "classes" [D, H, W] uint8: the network and ArgMax in one graph, so that the class scores never
leave the runtime. The cobra network has only BatchNorm (running statistics, folded by the exporter) and no instance
norm, so a window's extent is not part of the model: the whole crop runs in one forward (docs/decisions.md).

Parity: torch's argmax against onnxruntime's "classes" on real crops; the export fails unless they agree on at least
`PARITY_MIN` of the voxels. The fine card gets the file's name and sha256 (`network_file`, `network_sha256`).
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import shutil
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from abdoseg.inference.card import WEIGHTS_DIR, sha256_of
from abdoseg.inference.fine.card import FINE_CARD_NAME, FineCard, load_fine_card

OPSET = 17
PARITY_MIN = 0.999
NETWORK_FILE = "fine.onnx"


class FineExportError(ValueError):
    """The export cannot be trusted (parity failed)."""


class _WithArgmax(nn.Module):
    """The network followed by argmax over classes, as uint8 [D, H, W] (batch of one)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image).argmax(1)[0].to(torch.uint8)


def fine_onnx_bytes(network: nn.Module, card: FineCard) -> bytes:
    """The serialised graph "image" [1, C, D, H, W] -> "classes" [D, H, W] uint8, D, H, W dynamic."""
    div = card.architecture.divisor
    example = torch.zeros(1, card.architecture.in_channels, 2 * div, 2 * div, 2 * div)
    buffer = io.BytesIO()
    axes = {"image": {2: "D", 3: "H", 4: "W"}, "classes": {0: "D", 1: "H", 2: "W"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        torch.onnx.export(_WithArgmax(network).eval(), (example,), buffer, input_names=["image"],
                          output_names=["classes"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def parity(network: nn.Module, onnx_bytes: bytes, images: Sequence[np.ndarray]) -> list[float]:
    """Share of voxels on which torch's argmax and onnxruntime's "classes" agree, per image [1, C, D, H, W]."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    out = []
    for image in images:
        with torch.inference_mode():
            expected = network(torch.from_numpy(image)).argmax(1)[0].numpy()
        got = session.run(None, {"image": image})[0]
        out.append(float(np.mean(got == expected)))
    return out


def export_fine(weights: Path, images: Sequence[np.ndarray], out: Path | None = None) -> FineCard:
    """Write `out`/fine.onnx (default: beside the card) and the card with its name and sha256, after the parity
    check on `images` (network inputs [1, C, D, H, W] on the fine grid)."""
    from abdoseg.inference.fine.stage import FineStage

    card_path = Path(weights) / FINE_CARD_NAME if Path(weights).is_dir() else Path(weights)
    stage = FineStage.load(card_path, "cpu")
    data = fine_onnx_bytes(stage.network, stage.card)
    agreement = parity(stage.network, data, images)
    if min(agreement) < PARITY_MIN:
        raise FineExportError(f"torch and onnxruntime agree on {min(agreement):.5f} of the voxels (< {PARITY_MIN})")
    folder = Path(out) if out is not None else card_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    weights_file = card_path.parent / stage.card.weights_file
    if not (folder / weights_file.name).exists():
        shutil.copy2(weights_file, folder / weights_file.name)
    (folder / NETWORK_FILE).write_bytes(data)
    card = dataclasses.replace(stage.card, network_file=NETWORK_FILE, network_sha256=sha256_of(folder / NETWORK_FILE))
    card.save(folder / card_path.name)
    return card


def crop_images(card: FineCard, data: Path) -> list[np.ndarray]:
    """Network inputs of the organ crops (reference labels give the box) of every case in `data` (imagesTr +
    labelsTr), as the torch-free stage makes them."""
    from abdoseg.inference.fine.crop import organ_box
    from abdoseg.inference.fine.graph_stage import network_input
    from abdoseg.training.data import find_cases, read_canonical

    images = []
    for case in find_cases(data):
        ct, labels, spacing = read_canonical(case, labelset=card.labelset)
        box = organ_box(labels, spacing, card.margin_mm)
        images.append(network_input(ct if box is None else ct[box.slices], spacing, card)[0])
    return images


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="abdoseg export-fine", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="folder with fine.json + fine.pt")
    p.add_argument("--data", type=Path, required=True, help="labelled scans for the parity check (imagesTr, labelsTr)")
    p.add_argument("--out", type=Path, required=True, help="folder for fine.onnx, fine.json and the weights")
    args = p.parse_args(argv)
    try:
        card, _ = load_fine_card(args.weights)
        exported = export_fine(args.weights, crop_images(card, args.data), args.out)
    except (OSError, ValueError) as e:
        print(f"export-fine: error: {e}", file=sys.stderr)
        return 2
    print(f"export-fine: wrote {args.out / NETWORK_FILE} (sha256 {exported.network_sha256[:12]}…) and its card")
    return 0
