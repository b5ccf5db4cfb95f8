"""The evaluation subcommands: `abdoseg evaluate` (score label maps) and `abdoseg efficiency` (time a command)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from abdoseg.evaluation.labelsets import LABELSETS

EXAMPLE_CONTAINER = ("podman run --rm -v {inputs}:/workspace/inputs -v {outputs}:/workspace/outputs "
                     "abdoseg:latest /bin/bash -c \"sh predict.sh\"")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="abdoseg",
                                     description="Score segmentations (DSC, NSD) and time a prediction command.")
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser("evaluate", help="DSC and NSD per case and organ, FLARE rules",
                        description="Score every <case>.nii.gz of --gt against the same file name in --pred. "
                                    "A missing prediction scores 0; a prediction off the GT's grid or an "
                                    "unreadable file is an error for that case (NaN rows, exit code 1).")
    ev.add_argument("--pred", type=Path, required=True, help="folder of predicted label maps <case>.nii.gz")
    ev.add_argument("--gt", type=Path, required=True, help="folder of ground-truth label maps <case>.nii.gz")
    ev.add_argument("--labelset", choices=sorted(LABELSETS), default="flare21",
                    help="flare21: labels 1-4, NSD at 1 mm; flare22: labels 1-13, per-organ tolerances, "
                         "NSD=0 where DSC<0.2, aorta/IVC/esophagus on the GT's slices only (default flare21)")
    ev.add_argument("--out", type=Path, help="CSV with one row per case x organ: case,label,organ,dsc,nsd,status")
    ev.add_argument("--plot", metavar="PREFIX", help="write box plots PREFIX_dsc.png and PREFIX_nsd.png")
    ev.add_argument("--volumes", type=Path, metavar="CSV",
                    help="also print and write each case's organ volumes: reference, predicted and false-positive ml "
                         "(predicted outside the reference's organ; all of it where the organ is absent)")

    ef = sub.add_parser("efficiency", help="time a command case by case, sampling GPU memory, CPU and RAM",
                        description="Copy each image of --inputs alone into a fresh inputs folder, run --cmd "
                                    "({inputs} and {outputs} replaced by the folders) and measure wall time, "
                                    "GPU memory (NVML; 0 without GPU), host CPU and RAM every --interval s. "
                                    "Exit code 1 if a run did not exit 0 or wrote no <case>.nii.gz.",
                        epilog=f"container, the organisers' way: --cmd '{EXAMPLE_CONTAINER}'; "
                               "local: --cmd './predict.sh {inputs} {outputs}'")
    ef.add_argument("--cmd", required=True, help="shell command with {inputs} and {outputs} placeholders")
    ef.add_argument("--inputs", type=Path, required=True, help="folder of <case>_0000.nii.gz images")
    ef.add_argument("--out", type=Path, required=True, help="CSV, one row per case plus a summary row")
    ef.add_argument("--keep-outputs", type=Path, metavar="DIR", help="move outputs and <case>.log here")
    ef.add_argument("--workdir", type=Path, help="where the fresh inputs/outputs folders are made (default: temp)")
    ef.add_argument("--interval", type=float, default=0.1, help="sampling interval in s (default 0.1)")
    ef.add_argument("--timeout", type=float, help="kill a run after this many seconds (exit code 124)")
    ef.add_argument("--gpu-index", type=int, default=0, help="NVML index of the GPU to sample (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _evaluate(args) if args.command == "evaluate" else _efficiency(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _evaluate(args: argparse.Namespace) -> int:
    from abdoseg.evaluation.accuracy import evaluate_folders, unmatched_predictions
    from abdoseg.evaluation.labelsets import get_labelset
    from abdoseg.evaluation.report import format_summary, plot_boxes, summarize, write_csv

    labelset = get_labelset(args.labelset)
    rows, errors = [], 0
    for result in evaluate_folders(args.pred, args.gt, labelset):
        rows.extend(result.scores)
        if result.message is not None:
            failed = result.scores[0].status == "error"
            errors += failed
            print(f"{'error' if failed else 'warning'}: {result.message}", file=sys.stderr)
    for name in unmatched_predictions(args.pred, args.gt):
        print(f"note: {args.pred / name}: no ground truth of that name, not scored", file=sys.stderr)
    if args.out is not None:
        write_csv(args.out, rows)
    missing = len({r.case for r in rows if r.status == "missing"})
    print(f"{labelset.name}: {len({r.case for r in rows})} cases, {missing} missing (scored 0), {errors} with errors")
    print(format_summary(summarize(rows)))
    if args.plot:
        for path in plot_boxes(rows, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    if args.volumes is not None:
        _volumes(args, labelset, {r.case for r in rows if r.status == "ok"})
    return 1 if errors else 0


def _volumes(args: argparse.Namespace, labelset, cases: set[str]) -> None:
    """The held-out report's rows (abdoseg.evaluation.held_out) of the cases that were scored."""
    from abdoseg.evaluation.accuracy import SUFFIX
    from abdoseg.evaluation.held_out import format_held_out, score_held_out_files
    from abdoseg.evaluation.report import write_csv

    rows = [row for case in sorted(cases)
            for row in score_held_out_files(case, args.gt / f"{case}{SUFFIX}", args.pred / f"{case}{SUFFIX}", labelset)]
    if rows:
        write_csv(args.volumes, rows)
        print(format_held_out(rows))


def _efficiency(args: argparse.Namespace) -> int:
    from abdoseg.evaluation.efficiency import run_efficiency, summary_row
    from abdoseg.evaluation.report import write_csv

    results, gpu_reported = [], False
    for run in run_efficiency(args.cmd, args.inputs, args.workdir, args.keep_outputs, args.interval, args.timeout,
                              args.gpu_index):
        r = run.result
        if not gpu_reported:
            print(f"GPU sampled: {run.gpu_name or 'none (GPU memory reads 0)'}", file=sys.stderr)
            gpu_reported = True
        print(f"{r.case}: exit {r.exit_code}, output {'written' if r.output_written else 'MISSING'}, "
              f"{r.time_s:.2f} s, GPU max {r.gpu_mem_max_mib:.0f} MiB, CPU max {r.cpu_max_pct:.0f} %, "
              f"RAM max {r.ram_max_mib:.0f} MiB", file=sys.stderr)
        if r.exit_code != 0 or not r.output_written:
            print(f"{r.case}: last lines of the command's output:\n{run.log_tail}", file=sys.stderr)
        results.append(r)
    summary = summary_row(results)
    write_csv(args.out, [*results, summary])
    print(f"{len(results)} cases, mean time {summary.time_s:.2f} s, {summary.exit_code} failed runs, "
          f"{summary.output_written} outputs written; wrote {args.out}")
    return 0 if summary.exit_code == 0 and summary.output_written == len(results) else 1
