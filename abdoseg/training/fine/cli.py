"""`abdoseg train-fine`: train the fine network, write
<out>/fine.pt (state dict) and <out>/fine.json (card, sha256, provenance), reload them through
`abdoseg.inference.fine.FineStage.load` and report a training-set Dice per organ on the fine grid."""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from abdoseg.inference.card import WEIGHTS_DIR
from abdoseg.inference.fine.card import FINE_CARD_NAME, Architecture, FineCard, Provenance

LABEL_NOTE = "TotalSegmentator pseudo-labels (model outputs remapped to {} labels), not manual delineations"


def _triple(kind: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        parts = [kind(v) for v in text.replace("x", ",").split(",")]
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"need three values z,y,x, got {text!r}")
        return tuple(parts)

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="abdoseg train-fine", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="folder with imagesTr/<case>_0000.nii.gz + labelsTr/")
    p.add_argument("--out", type=Path, required=True,
                   help="folder for fine.pt + fine.json (never defaulted: the shipped weights are replaced only on "
                   f"purpose, --out {WEIGHTS_DIR.relative_to(WEIGHTS_DIR.parents[1])})")
    p.add_argument("--name", default="abdoseg_fine")
    p.add_argument("--base-features", type=int, default=32)
    p.add_argument("--max-features", type=int, default=320)
    p.add_argument("--stages", type=int, default=5, help="resolutions of the U-Net (default 5)")
    p.add_argument("--patch", type=_triple(int), default=(64, 160, 160), help="z,y,x voxels (default 64,160,160)")
    p.add_argument("--spacing", type=_triple(float), default=(2.5, 1.5, 1.5), help="fine grid mm z,y,x")
    p.add_argument("--margin-mm", type=float, default=20.0, help="crop margin around the organs (seed 001: 40)")
    p.add_argument("--labelset", default="flare21",
                   help="label set of the labels and classes (abdoseg.inference.labels)")
    p.add_argument("--kind", choices=("unet", "cobra"), default="unet",
                   help="network: nnU-Net-style U-Net, or the coarse model's network (needed by --init-from)")
    p.add_argument("--init-from", type=Path, default=None, metavar="COARSE_ONNX",
                   help="initialise the (cobra) network from the coarse model's weights (seed 001)")
    p.add_argument("--window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="one HU window instead of the two default ones (seed 001: -325 325)")
    p.add_argument("--global-norm", action="store_true",
                   help="standardise the clipped HU by the training organs' mean and std (recorded in the card) "
                   "instead of mapping each window to [0, 1] (seed 001)")
    p.add_argument("--max-minutes", type=float, default=15.0, help="wall-clock budget of the training loop")
    p.add_argument("--max-iters", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the network trains")
    p.add_argument("--notes", default="", help="free text for the card's provenance")
    p.add_argument("--skip-check", action="store_true",
                   help="skip the training-set Dice check after saving (the reload through FineStage.load stays)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad arguments or data)."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args, list(sys.argv[1:] if argv is None else argv))
    except ValueError as e:
        print(f"train-fine: error: {e}", file=sys.stderr)
        return 2


def _log(msg: str) -> None:
    print(f"train-fine: {msg}", file=sys.stderr, flush=True)


def _card(args: argparse.Namespace) -> FineCard:
    """The card the options describe (weights, sha256, provenance and intensity statistics filled in later)."""
    from abdoseg.inference.card import Window
    from abdoseg.inference.labels import label_map

    windows = FineCard.__dataclass_fields__["windows"].default
    if args.window is not None:
        low, high = args.window
        if not high > low:
            raise ValueError(f"--window needs LOW < HIGH, got {low} {high}")
        windows = (Window(level=(low + high) / 2, width=high - low),)
    arch = Architecture(in_channels=len(windows), n_classes=len(label_map(args.labelset).names),
                        base_features=args.base_features, max_features=args.max_features, n_stages=args.stages,
                        kind=args.kind)
    return FineCard(name=args.name, weights_file="fine.pt", sha256=None, architecture=arch, spacing=args.spacing,
                    patch_size=args.patch, margin_mm=args.margin_mm, windows=windows, labelset=args.labelset,
                    keep_components=dict(label_map(args.labelset).keep_components))


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    import torch

    from abdoseg.inference.card import sha256_of
    from abdoseg.inference.fine import FineStage
    from abdoseg.inference.labels import label_map
    from abdoseg.training.fine.data import find_pairs, fine_sample, global_intensity, read_scan_pair
    from abdoseg.training.fine.train import TrainConfig, coarse_initialised, dice_per_organ, predict_sample, train

    if args.threads:
        torch.set_num_threads(args.threads)
    card = _card(args)
    config = TrainConfig(max_minutes=args.max_minutes, max_iterations=args.max_iters, batch_size=args.batch_size,
                         lr=args.lr, seed=args.seed, device=args.device)
    pairs = find_pairs(args.data)
    scans = [read_scan_pair(case, image, label) for case, image, label in pairs]
    if args.global_norm:
        card = dataclasses.replace(card, global_intensity=global_intensity(scans, card.windows[0]))
        _log(f"global intensity statistics (mean, std) {card.global_intensity}")
    samples = []
    for scan in scans:
        sample = fine_sample(scan, card)
        samples.append(sample)
        _log(f"{scan.name}: fine grid {tuple(sample.labels.shape)} at {card.spacing} mm")
    network = None
    if args.init_from is not None:
        network = coarse_initialised(card, args.init_from)
        _log(f"initialised from {args.init_from}")
    result = train(samples, card, config, _log, network)
    _log(f"trained {result.iterations} iterations in {result.minutes:.1f} min, "
         f"last-50 loss {sum(result.losses[-50:]) / max(1, len(result.losses[-50:])):.4f}")

    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / card.weights_file
    torch.save(result.state_dict, weights)
    provenance = Provenance(
        data=", ".join(f"{case} ({image.name})" for case, image, _ in pairs) + f" from {args.data}",
        labels=LABEL_NOTE.format(card.labelset.upper()),
        command="python -m abdoseg train-fine " + " ".join(shlex.quote(a) for a in argv),
        trained_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        iterations=result.iterations,
        minutes=round(result.minutes, 2),
        notes=args.notes,
        initialised_from="" if args.init_from is None else f"{args.init_from.name} (sha256 {sha256_of(args.init_from)})",
    )
    card = dataclasses.replace(card, sha256=sha256_of(weights), provenance=provenance)
    card.save(args.out / FINE_CARD_NAME)
    _log(f"wrote {weights} and {args.out / FINE_CARD_NAME}")

    stage = FineStage.load(args.out, "cpu")  # the shipped files load through the inference path
    for sample in [] if args.skip_check else samples:
        dsc = dice_per_organ(predict_sample(stage.network, sample, stage.card), sample.labels, card.labelset)
        _log(f"{sample.name}: training-set Dice on the fine grid ({', '.join(label_map(card.labelset).organs.values())}) "
             + " ".join(f"{d:.3f}" for d in dsc))
    return 0
