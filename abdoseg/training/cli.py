"""The training subcommands: `abdoseg train`, `export`, `quantize`, `train-locator`, `reframe`, `architectures`."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the whole-scan network on a FLARE/nnU-Net folder")
    p.add_argument("--data", required=True, type=Path, help="folder with imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, log, cache, curves)")
    p.add_argument("--folds", type=int, default=1, help="cross-validation folds (1: validate on the training cases)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--hold-out", nargs="+", default=(), metavar="CASE",
                   help="leave these cases out of training and validation; at the end the final network segments "
                   "them through the pipeline and RUN/held_out.json scores them (DSC, NSD, false-positive ml)")
    p.add_argument("--early-stop", type=int, default=12, metavar="EPOCHS",
                   help="stop after this many epochs without a better validation (default 12)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of --iters-per-epoch steps (default 60); with --resume, a new end for the run")
    p.add_argument("--iters-per-epoch", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=None, help="default 2 (2D --arch: the recipe's)")
    p.add_argument("--crop", type=int, nargs=3, default=(48, 96, 96), metavar=("D", "H", "W"))
    p.add_argument("--val-crops", nargs="+", default=("full",), help="framings of each validation case scored every epoch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ce-weight", type=float, default=1.0, help="cross-entropy term weight (0: Dice only)")
    p.add_argument("--geometry", choices=("resize", "spacing"), default="resize")
    p.add_argument("--spacing", type=float, nargs=3, default=(4.0, 2.6, 2.6), metavar=("Z", "Y", "X"),
                   help="model-grid spacing in mm for --geometry spacing")
    p.add_argument("--max-minutes", type=float, default=None, help="wall-time budget; the run stops on its own")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="cuda: a GPU (refused when torch sees none); auto: cuda when torch sees a GPU, else cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--flip-lr", type=float, default=0.0,
                   help="probability of a left/right flip per crop (default 0: flips make the network confuse "
                   "spleen and liver, whose main cue is their side)")
    p.add_argument("--slab-p", type=float, default=0.0,
                   help="probability that a crop keeps only a thin axial slab (4-16 model-grid slices) with air "
                   "around it, as a scan a few centimetres long looks on the canvas (default 0)")
    p.add_argument("--structures", type=Path, default=None, metavar="DIR",
                   help="TotalSegmentator structure maps <case>_total.nii.gz of the training cases: the sources of "
                   "label-driven synthesis (--synth-p)")
    p.add_argument("--synth-p", type=float, default=0.0,
                   help="share of training crops synthesised from the deformed structure maps, with CT contrast "
                   "phases (default 0); the run folder gets synthetic_preview.png")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start from this checkpoint's weights, or from a shipped composed .onnx (fine-tune)")
    p.add_argument("--freeze-norm", action="store_true",
                   help="keep BatchNorm statistics frozen (needed when --init-from is an .onnx: its norms are folded)")
    p.add_argument("--labelset", choices=("flare21", "flare22"), default="flare21",
                   help="label set of the labels and the network's organ classes (abdoseg.inference.labels; "
                   "default flare21)")
    p.add_argument("--deep-supervision", action="store_true", help="4 decoder outputs, each supervised (seed 001)")
    p.add_argument("--unlabelled", type=Path, default=None, metavar="DIR",
                   help="unlabelled <case>_0000.nii.gz scans: KL of each of the 4 outputs to their mean softmax, "
                   "weighted by a sigmoid ramp-up (implies --deep-supervision)")
    p.add_argument("--unsup-weight", type=float, default=0.1, help="full weight of the unlabelled term (default 0.1)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt with OUT/config.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    two_d = p.add_argument_group("2D systems (abdoseg.training.slices: each seed's recipe as a preset)")
    two_d.add_argument("--arch", default="cobra", help="cobra (the whole-scan 3D network, default) or a 2D "
                       "architecture: vgg13_unet_ds, nnunet2d, hrnet48_ocr")
    two_d.add_argument("--width", type=float, default=0.25, help="2D: channel multiplier (1: the paper's)")
    two_d.add_argument("--slice-size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"),
                       help="2D: in-plane grid of training and of the exported card")
    two_d.add_argument("--slice-crop", type=int, nargs=2, default=None, metavar=("H", "W"),
                       help="2D: training crop (default: the recipe's, scaled to --slice-size)")
    two_d.add_argument("--steps", type=int, default=1000, help="2D: optimiser steps (the poly schedule's length)")
    two_d.add_argument("--steps-per-epoch", type=int, default=50, help="2D: steps between validations")
    two_d.add_argument("--slices-per-run", type=int, default=None,
                       help="2D: slices per network run at inference (default 4)")


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run to ONNX (preprocessing + network + argmax) with its model card")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--out", required=True, type=Path, help="weights folder")
    p.add_argument("--name", default="abdoseg_coarse", help="file stem of the .onnx and .json")
    p.add_argument("--checkpoint", default="best.pt")
    p.add_argument("--parity-data", type=Path, default=None,
                   help="FLARE folder for the parity check (default: the run's training data)")
    p.add_argument("--recipe", default=None, help="command that produced the run, recorded in the card")


def _reframe_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reframe", help="write re-framed copies of a FLARE folder (reoriented, upper 60 %%, finer)")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="gets one FLARE folder per variant")


def _quantize_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="INT8 copy of a card's network (NNCF), written only if it passes its gate")
    p.add_argument("--card", required=True, help="fp32 card (a JSON path, or flare21-fp32 / flare22)")
    p.add_argument("--data", required=True, type=Path, help="FLARE folder: calibration scans, and the gate's")
    p.add_argument("--out", required=True, type=Path, help="weights folder")
    p.add_argument("--name", required=True, help="file stem of the INT8 .onnx and .json")


def _locator_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-locator", help="train the locate stage's network on long variants; export it beside a card")
    p.add_argument("--data", required=True, type=Path, help="FLARE folder (imagesTr, labelsTr)")
    p.add_argument("--card", required=True, type=Path, help="model card that gets the locator section (file beside it)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--recipe", default=None, help="command that produced it, recorded in the card")


def _checkpoint(init_from: Path, run_dir: Path) -> Path:
    """A checkpoint to start from: the file itself, or one rebuilt from a shipped .onnx (training.warm_start)."""
    if init_from.suffix != ".onnx":
        return init_from.resolve()
    from abdoseg.training.warm_start import write_checkpoint

    run_dir.mkdir(parents=True, exist_ok=True)
    return write_checkpoint(init_from, run_dir / "warm_start.pt").resolve()


def _run_train_2d(args: argparse.Namespace) -> int:
    from abdoseg.training.slices.train import SliceTrainConfig, resumed_config, train_slices

    if args.resume:  # the run's own config; a new budget or thread count only
        cfg = resumed_config(args.out, args.arch, args.max_minutes, args.threads)
        best = train_slices(cfg, args.out, resume=True)
        logging.getLogger("training").info("best epoch %s: mean organ Dice %.4f", best.get("epoch"), best["val_mean_dice"])
        return 0
    cfg = SliceTrainConfig(
        data=str(args.data.resolve()), arch=args.arch, width=args.width, slice_size=tuple(args.slice_size),
        batch_size=args.batch_size, crop=None if args.slice_crop is None else tuple(args.slice_crop), steps=args.steps,
        steps_per_epoch=args.steps_per_epoch, max_minutes=args.max_minutes, seed=args.seed, threads=args.threads,
        slices_per_run=args.slices_per_run, device=args.device)
    best = train_slices(cfg, args.out)
    logging.getLogger("training").info("best epoch %s: mean organ Dice %.4f", best.get("epoch"), best["val_mean_dice"])
    return 0


def _run_train(args: argparse.Namespace) -> int:
    if args.resume:  # a run folder resumes only as the architecture it trains
        from abdoseg.training.slices.train import check_resume

        check_resume(args.out, args.arch)
    if args.arch != "cobra":
        return _run_train_2d(args)
    from abdoseg.inference.card import Geometry
    from abdoseg.training.augment import AugmentConfig
    from abdoseg.training.device import resolve_device
    from abdoseg.training.synthesis import SynthConfig
    from abdoseg.training.train import TrainConfig, train

    config_path = args.out / "config.json"
    if args.resume:
        if not config_path.is_file():
            raise ValueError(f"{config_path}: --resume needs the run's config.json")
        cfg = TrainConfig.from_json(config_path.read_text())
        # a resumed run may get a new budget or thread count; nothing that changes the maths may differ
        if args.max_minutes is not None:
            cfg = dataclasses.replace(cfg, max_minutes=args.max_minutes)
        if args.threads is not None:
            cfg = dataclasses.replace(cfg, threads=args.threads)
        if args.epochs is not None:  # where the run ends: the steps before it are the same whatever it is
            cfg = dataclasses.replace(cfg, epochs=args.epochs)
    else:
        geometry = (Geometry(mode="resize", shape=(96, 192, 192)) if args.geometry == "resize"
                    else Geometry(mode="spacing", shape=(96, 192, 192), spacing=tuple(args.spacing)))
        cfg = TrainConfig(
            data=str(args.data.resolve()), geometry=geometry, folds=args.folds, fold=args.fold,
            epochs=args.epochs or 60,
            iters_per_epoch=args.iters_per_epoch, batch_size=args.batch_size or 2, crop=tuple(args.crop), val_crops=tuple(args.val_crops), lr=args.lr,
            ce_weight=args.ce_weight, max_minutes=args.max_minutes, seed=args.seed, device=resolve_device(args.device),
            threads=args.threads, augment=AugmentConfig(flip_lr=args.flip_lr, slab_p=args.slab_p),
            init_from=None if args.init_from is None else str(_checkpoint(args.init_from, args.out)),
            freeze_norm=args.freeze_norm, labelset=args.labelset,
            deep_supervision=args.deep_supervision or args.unlabelled is not None,
            unlabelled=None if args.unlabelled is None else str(args.unlabelled.resolve()), unsup_weight=args.unsup_weight,
            hold_out=tuple(args.hold_out), early_stop_patience=args.early_stop,
            structures=None if args.structures is None else str(args.structures.resolve()),
            synth=SynthConfig(p=args.synth_p),
        )
    best = train(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    logging.getLogger("training").info("best epoch %s: mean organ Dice %.4f", best.get("epoch"), best["val_mean_dice"])
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from abdoseg.training.export import export_run
    from abdoseg.training.slices.train import is_slice_run

    if is_slice_run(args.run_dir):  # a 2D run: the slice graph and a "slices" card (abdoseg.training.slices.export)
        from abdoseg.training.slices.export import export_slice_run

        export_slice_run(args.run_dir, args.out, name=args.name, checkpoint=args.checkpoint,
                         parity_data=args.parity_data, recipe=args.recipe)
        return 0
    export_run(args.run_dir, args.out, name=args.name, checkpoint=args.checkpoint,
               parity_data=args.parity_data, recipe=args.recipe)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry of the training subcommands (abdoseg.command passes the subcommand's name first)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="abdoseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _export_parser(sub)
    _reframe_parser(sub)
    _locator_parser(sub)
    _quantize_parser(sub)
    arch = sub.add_parser("architectures", help="table of the registered networks: parameters, GFLOPs, input")
    arch.add_argument("--width", type=float, default=1.0, help="channel multiplier (1: the papers' configurations)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "train":  # the run folder keeps a human-readable log beside train_log.jsonl
        args.out.mkdir(parents=True, exist_ok=True)
        log_file = logging.FileHandler(args.out / "train.log")
        log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(log_file)
    try:
        if args.command == "architectures":
            from abdoseg.networks.table import format_table, rows

            print(format_table(rows(args.width)))
            return 0
        if args.command == "train-locator":
            from abdoseg.training.locator import run as run_locator

            path = run_locator(args.data, args.card, args.steps, args.seed, args.threads, args.recipe)
            logging.getLogger("training").info("wrote %s and the locator section of %s", path, args.card)
            return 0
        if args.command == "quantize":
            from abdoseg.training.quantize import quantize_card

            quantize_card(args.card, args.data, args.out, args.name)
            return 0
        if args.command == "reframe":
            from abdoseg.training.reframe import write_variants

            for folder in write_variants(args.data, args.out):
                logging.getLogger("training").info("wrote %s", folder)
            return 0
        return _run_train(args) if args.command == "train" else _run_export(args)
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
