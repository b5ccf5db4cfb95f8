"""`abdoseg import-nnunet`: an nnU-Net v2 model folder made into a card and one ONNX file per fold."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="abdoseg import-nnunet", description=__doc__,
        epilog="The network is rebuilt from plans.json with nnU-Net's own classes, each fold's checkpoint_final.pth "
        "loaded, exported to ONNX and checked against torch. Region-based models and normalisations other than "
        "CTNormalization are refused. See docs/nnunet.md.")
    p.add_argument("folder", type=Path, metavar="MODEL_FOLDER",
                   help="nnU-Net results folder TRAINER__PLANS__CONFIGURATION (dataset.json, plans.json, fold_<k>/)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR/NAME",
                   help="writes DIR/NAME.json (the card) and DIR/NAME.fold_<k>.onnx")
    p.add_argument("--folds", type=int, nargs="+", default=None, metavar="K",
                   help="folds to import (default: every fold_<k> holding a checkpoint_final.pth)")
    p.add_argument("--previous-stage", type=Path, default=None, metavar="DIR/LOWRES_NAME.json",
                   help="for 3d_cascade_fullres: the card of its 3d_lowres import")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from abdoseg.importers.nnunet.folder import ImportRefused
    from abdoseg.importers.nnunet.importer import import_model_folder

    try:
        card = import_model_folder(args.folder, args.out, tuple(args.folds) if args.folds else None,
                                   args.previous_stage)
    except ImportRefused as e:
        print(f"abdoseg import-nnunet: {e}", file=sys.stderr)
        return 2
    print(card)
    return 0
