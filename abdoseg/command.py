"""The `abdoseg` command (pyproject `[project.scripts]`, and `python -m abdoseg`): one entry, a subcommand per tool.

SUBCOMMANDS is the one list of tools: the parser, `abdoseg --help` and the README's table are held equal to it
(tests/test_command.py). Each subcommand hands its arguments to the module that owns it, imported only when asked,
so `abdoseg predict` needs the runtime only and the others say which extra they need when it is missing.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, NamedTuple, Sequence


class Subcommand(NamedTuple):
    module: str  # module with a `main(argv) -> int`
    prefix: tuple[str, ...]  # arguments put before the user's (the owner's own subcommand name)
    extra: str | None  # the pip extra it needs beyond the runtime
    help: str
    cold_start: bool = False  # timed as a cold process (abdoseg/__main__.py: environment first, no teardown)


_TRAIN = "abdoseg.training.cli"
SUBCOMMANDS: dict[str, Subcommand] = {
    "predict": Subcommand("abdoseg.inference.cli", (), None,
                          "segment scans (NIfTI/MHA/NRRD files, DICOM series folders) into label maps",
                          cold_start=True),
    "cohort": Subcommand("abdoseg.inference.cohort.cli", (), "cohort",
                         "segment a cohort on Ray: workers that load the model once, resume, retries"),
    "evaluate": Subcommand("abdoseg.evaluation.cli", ("evaluate",), "eval",
                           "score label maps: DSC and NSD, FLARE rules"),
    "efficiency": Subcommand("abdoseg.evaluation.cli", ("efficiency",), "eval",
                             "time a prediction command case by case the organisers' way"),
    "train": Subcommand(_TRAIN, ("train",), "train", "train a network (3D or 2D) on a FLARE/nnU-Net folder"),
    "export": Subcommand(_TRAIN, ("export",), "train", "export a training run to ONNX + model card"),
    "quantize": Subcommand(_TRAIN, ("quantize",), "train", "INT8 copy of a card's network, kept only behind its gate"),
    "train-locator": Subcommand(_TRAIN, ("train-locator",), "train", "train the locate stage's network of a card"),
    "reframe": Subcommand(_TRAIN, ("reframe",), "train", "write re-framed copies of a FLARE folder"),
    "architectures": Subcommand(_TRAIN, ("architectures",), "train",
                                "table of the registered networks: parameters, GFLOPs, input"),
    "train-fine": Subcommand("abdoseg.training.fine.cli", (), "train", "train the fine stage's network"),
    "validate-fine": Subcommand("abdoseg.training.fine.validation", (), "train",
                                "record the fine path against the CPU path in the fine card"),
    "export-fine": Subcommand("abdoseg.training.fine.export", (), "train",
                              "export the fine network to ONNX (network + ArgMax), parity-checked"),
    "quantize-fine": Subcommand("abdoseg.training.fine.quantize", (), "train",
                                "INT8 copy of the fine graph, kept only behind the coarse card's gate"),
    "import-nnunet": Subcommand("abdoseg.importers.nnunet.cli", (), "nnunet",
                                "import an nnU-Net v2 model folder: ONNX per fold + card, parity-checked"),
}


def build_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<14} {sub.help}" + (f" [needs abdoseg[{sub.extra}]]" if sub.extra else "")
                      for name, sub in SUBCOMMANDS.items())
    p = argparse.ArgumentParser(
        prog="abdoseg", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Abdominal CT organ segmentation (FLARE21: 1 liver, 2 kidneys, 3 spleen, 4 pancreas; "
        "FLARE22: 13 organs).",
        epilog=f"subcommands:\n{lines}\n\n`abdoseg SUBCOMMAND --help` for each one's options.")
    p.add_argument("command", choices=list(SUBCOMMANDS), metavar="SUBCOMMAND")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the subcommand's own arguments")
    return p


def _load(sub: Subcommand) -> Callable[[Sequence[str]], int]:
    return importlib.import_module(sub.module).main


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    sub = SUBCOMMANDS[args.command]
    try:
        entry = _load(sub)
    except ImportError as e:  # an extra that is not installed: one line saying which
        hint = f"; install it with: pip install 'abdoseg[{sub.extra}]'" if sub.extra else ""
        print(f"abdoseg {args.command}: missing module {e.name or e}{hint}", file=sys.stderr)
        return 2
    try:
        return int(entry([*sub.prefix, *args.args]) or 0)
    except ModuleNotFoundError as e:  # imported lazily by the subcommand (scipy, torch, ...)
        if not sub.extra:
            raise
        print(f"abdoseg {args.command}: missing module {e.name}; install it with: pip install 'abdoseg[{sub.extra}]'",
              file=sys.stderr)
        return 2


def is_cold_start(argv: Sequence[str]) -> bool:
    """True when `argv` runs a subcommand that organisers time as a cold process (abdoseg/__main__.py)."""
    sub = SUBCOMMANDS.get(argv[0]) if argv else None
    return sub is not None and sub.cold_start
