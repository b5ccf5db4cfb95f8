"""The installed `abdoseg` command (pyproject `[project.scripts]`): one entry point, a subcommand per tool.

Each subcommand hands its arguments to the module that owns it, imported only when asked, so `abdoseg predict`
needs the runtime only and the others say which extra they need when it is missing.
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


SUBCOMMANDS: dict[str, Subcommand] = {
    "predict": Subcommand("inference.cli", (), None,
                          "segment every scan of a folder (NIfTI/MHA/NRRD files, DICOM series folders)"),
    "evaluate": Subcommand("evaluation.cli", ("evaluate",), "eval", "score label maps: DSC and NSD, FLARE rules"),
    "efficiency": Subcommand("evaluation.cli", ("efficiency",), "eval",
                             "time a prediction command case by case the organisers' way"),
    "train": Subcommand("training.__main__", ("train",), "train", "train the network on a FLARE/nnU-Net folder"),
    "export": Subcommand("training.__main__", ("export",), "train", "export a training run to ONNX + model card"),
    # "cohort" (issue 16) registers here.
}


def build_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<11} {sub.help}" + (f" [needs abdoseg[{sub.extra}]]" if sub.extra else "")
                      for name, sub in SUBCOMMANDS.items())
    p = argparse.ArgumentParser(
        prog="abdoseg", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Abdominal CT organ segmentation (1 liver, 2 kidneys, 3 spleen, 4 pancreas).",
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


if __name__ == "__main__":
    sys.exit(main())
