"""`python -m abdoseg cohort` (and `abdoseg cohort`): segment a cohort on Ray; exit 0 iff every case succeeded."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from abdoseg.inference.cohort.cases import CohortCase, has_valid_output, load_cases
from abdoseg.inference.cohort.results import ResultsTable
from abdoseg.inference.io.cases import ignored_reason


def build_parser() -> argparse.ArgumentParser:
    from abdoseg.inference.card import DEFAULT_CARD

    p = argparse.ArgumentParser(
        prog="abdoseg cohort",
        description="Segment a cohort of CT scans on Ray: a pool of workers, each loading the model once. "
        "Resumable: a case whose output is already on the input's grid is skipped. Writes <case>.nii.gz and "
        "results.csv (case, status, seconds, worker, error) to OUTPUT. Exit 0 only if every case succeeded.")
    p.add_argument("--input", "-i", required=True, type=Path,
                   help="folder of <case>_0000.nii.gz scans, or a CSV manifest with an 'image' column "
                   "(paths absolute or relative to the CSV) and an optional 'case' column")
    p.add_argument("--output", "-o", required=True, type=Path, help="folder for <case>.nii.gz and results.csv")
    p.add_argument("--address", default="local",
                   help="'local': start Ray on this machine (default); 'auto' or HOST:PORT: join a running "
                   "cluster (ray start, KubeRay)")
    p.add_argument("--workers", type=int, default=None,
                   help="workers (default: the cluster's CPUs // --threads-per-worker)")
    p.add_argument("--threads-per-worker", type=int, default=1, help="CPU threads of each worker (default 1)")
    p.add_argument("--card", default=DEFAULT_CARD,
                   help="model card JSON, shipped card name or preset, as abdoseg predict")
    p.add_argument("--model", default=None, help="ONNX file (default: the one the card names)")
    p.add_argument("--runtime", choices=("openvino", "onnxruntime"), default="openvino")
    p.add_argument("--retries", type=int, default=2,
                   help="retries of a case whose worker died (killed, out of memory); default 2")
    p.add_argument("--results", type=Path, default=None, help="results table (default: OUTPUT/results.csv)")
    return p


def _check_args(args: argparse.Namespace) -> str | None:
    for flag, value, low in (("--workers", args.workers, 1), ("--threads-per-worker", args.threads_per_worker, 1),
                             ("--retries", args.retries, 0)):
        if value is not None and value < low:
            return f"{flag} must be >= {low}, got {value}"
    return None


def _check_model(args: argparse.Namespace) -> None:
    """The card and the model's checksum, before any worker starts (ValueError/OSError: one line)."""
    from abdoseg.inference.card import load_card, verify_checksum

    card, model_path = load_card(args.card, None if args.model is None else Path(args.model))
    verify_checksum(card, model_path)


def _print_row(row: dict) -> None:
    if row["status"] == "ok":
        print(f"{row['case']}: ok {float(row['seconds']):.2f} s on {row['worker']}", file=sys.stderr)
    else:
        print(f"{row['case']}: FAILED — {row['error']}", file=sys.stderr)


def _segment(todo: list[CohortCase], args: argparse.Namespace, table: ResultsTable, counts: dict) -> None:
    import ray

    from abdoseg.inference.cohort.runner import PoolConfig, connect, run_pool

    cfg = PoolConfig(args.card, args.model, args.runtime, args.threads_per_worker, args.workers, args.retries)
    started = connect(args.address, (args.workers or 1) * args.threads_per_worker)
    try:
        def on_row(row: dict) -> None:
            table.append(row)
            counts[row["status"]] += 1
            _print_row(row)

        n = run_pool(todo, cfg, on_row)
        print(f"abdoseg cohort: {n} worker(s) x {cfg.threads} thread(s)", file=sys.stderr)
    finally:
        if started:
            ray.shutdown()


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    cases, ignored = load_cases(args.input, args.output)
    for p in ignored:
        print(f"abdoseg cohort: note: ignoring {p.name} ({ignored_reason(p, True)})", file=sys.stderr)
    if not cases:
        print(f"abdoseg cohort: error: {args.input}: no cases found", file=sys.stderr)
        return 1
    _check_model(args)
    args.output.mkdir(parents=True, exist_ok=True)
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    with ResultsTable(args.results or args.output / "results.csv") as table:
        todo = []
        for case in cases:
            if case.problem:  # e.g. two inputs for one case: a failed row, the others go on
                row = {"case": case.name, "status": "failed", "error": case.problem}
                table.append(row)
                counts["failed"] += 1
                _print_row(row)
            elif has_valid_output(case):
                table.append({"case": case.name, "status": "skipped", "error": "valid output exists"})
                counts["skipped"] += 1
            else:
                todo.append(case)
        if counts["skipped"]:
            print(f"abdoseg cohort: {counts['skipped']} of {len(cases)} case(s) already have a valid output: "
                  "skipped", file=sys.stderr)
        if todo:
            _segment(todo, args, table, counts)
    print(f"abdoseg cohort: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed of "
          f"{len(cases)} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 1 if counts["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point (`abdoseg cohort` calls this with its arguments); returns the exit status."""
    args = build_parser().parse_args(argv)
    problem = _check_args(args)
    if problem:
        print(f"abdoseg cohort: error: {problem}", file=sys.stderr)
        return 2
    from abdoseg.inference.cohort.runner import WorkerStartError

    try:
        return run(args)
    except (ValueError, OSError, ImportError, WorkerStartError) as e:  # manifest, card, model, no Ray: one line
        print(f"abdoseg cohort: error: {e}", file=sys.stderr)
        return 2
