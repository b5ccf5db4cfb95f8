"""Command line: segment a scan, a DICOM series or a folder of cases; one line per case on stderr; exit 0 iff all
succeed."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from abdoseg.inference.graph.runtime import ModelLoadError
from abdoseg.inference.outputs.case import ExtraOutputs, add_output_options, predict_case
from abdoseg.inference.process.progress import progress
from abdoseg.inference.process.resources import gpu_present, usable_cpus

DEFAULT_RUNTIME = "openvino"


def build_parser() -> argparse.ArgumentParser:
    from abdoseg.inference.card import DEFAULT_CARD

    p = argparse.ArgumentParser(
        prog="abdoseg predict",
        description="Segment abdominal CT scans (the card's label set: FLARE21 by default, 1 liver, 2 kidneys, "
        "3 spleen, 4 pancreas; --card flare22: FLARE22's 13 organs). "
        "INPUT is a scan file (.nii.gz/.nii/.mha/.nrrd, any name), a DICOM series folder, or a folder of cases "
        "(<case>_0000.<ext> or <name>.<ext> scans, and folders holding a DICOM series at any depth); each case "
        "gives <case>.nii.gz (uint8) in OUTPUT on the input's exact grid. Exit status 0 only if every case succeeded.",
    )
    p.add_argument("-i", "--input", type=Path,
                   help="a scan file, a DICOM series folder, or a folder of cases (docs/usage.md)")
    p.add_argument("-o", "--output", type=Path,
                   help="folder for the outputs (created if missing); for a single input also a file name ending "
                   "in .nii.gz: the label map is written exactly there")
    p.add_argument("--model", type=Path, default=None,
                   help="ONNX file (default: the one the card names, beside the card), or an nnU-Net v2 model "
                   "folder (TRAINER__PLANS__CONFIGURATION), imported once into the cache (needs abdoseg[nnunet])")
    p.add_argument("--card", default=DEFAULT_CARD,
                   help="model card JSON, a shipped card's name (flare21: the INT8 network, the default; "
                   "flare21-fp32: the same in fp32; flare21-fine: the INT8 network, then the fine stage on the "
                   "organ crop; flare22: the FLARE22 model), or a preset: 'cobra' = the COBRA published format "
                   "(needs --model)")
    p.add_argument("--runtime", choices=("openvino", "onnxruntime"), default=DEFAULT_RUNTIME,
                   help=f"CPU runtime for the graph (default: {DEFAULT_RUNTIME}, the faster cold run here)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: the cores this process may use, cgroup/affinity aware)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help="cuda: the card's stages on the GPU (its fine stage through torch); auto: a card's fine "
                   "stage only when its card shows it at least as good as the coarse path on every organ, on cuda "
                   "when a GPU, a CUDA torch and the fine weights are present, else on the cpu (default: auto)")
    p.add_argument("--tta", action="store_true",
                   help="nnU-Net cards: test-time mirroring over the card's mirror axes, as nnU-Net's default")
    p.add_argument("--log", type=Path, default=None, help="also append one JSON line per case to this file")
    p.add_argument("--cache-dir", type=Path, default=os.environ.get("ABDOSEG_CACHE_DIR") or None,
                   help="compiled-model cache for OpenVINO (default: $ABDOSEG_CACHE_DIR, else none)")
    p.add_argument("--warmup", action="store_true",
                   help="load the model, run it once on a small synthetic volume (fills --cache-dir) and exit")
    p.add_argument("--shard", type=_shard_arg, default=None, metavar="INDEX/COUNT",
                   help="segment only shard INDEX of COUNT: cases sorted by name, every COUNT-th from INDEX "
                   "(e.g. a Kubernetes Indexed Job: --shard $JOB_COMPLETION_INDEX/N)")
    add_output_options(p)  # --output-type, --statistics, --preview (abdoseg.inference.outputs.case)
    return p


def _shard_arg(text: str):
    from abdoseg.inference.process.shard import Shard

    try:
        return Shard.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def resolve_device(requested: str, fine_weights: Path | None = None, labelset: str | None = None) -> tuple[str, str]:
    """The device and, when 'auto' passes over the fine stage it could run, why (for the model line).

    'auto' -> 'cuda' when a GPU, a CUDA torch and fine weights are present and the fine card shows the fine
    stage at least as good as the CPU path on every organ of `labelset` (the model card's) (`fine_verdict`);
    else 'cpu'. 'auto' on a GPU and 'cuda' without fine weights: 'cpu', saying so."""
    if requested == "cpu" or (requested == "auto" and not gpu_present()):
        return "cpu", ""
    try:
        from abdoseg.inference.card import WEIGHTS_DIR
        from abdoseg.inference.fine import fine_available, fine_weights_missing
        from abdoseg.inference.fine.card import fine_verdict_at
    except ImportError:
        return ("cpu", "") if requested == "auto" else (requested, "")
    weights = fine_weights or WEIGHTS_DIR
    if (missing := fine_weights_missing(weights)) is not None:
        return "cpu", f"fine stage not used: {missing}"
    if requested != "auto":
        return requested, ""
    if not fine_available(weights):
        return "cpu", ""
    reason = fine_verdict_at(weights, labelset)
    return ("cpu", f"fine stage not used: {reason}") if reason else ("cuda", "")


def _imported_card(folder: Path) -> Path:
    """The card of an nnU-Net model folder, imported on first use (abdoseg.importers.nnunet.cached_import)."""
    try:
        from abdoseg.importers.nnunet import cached_import
    except ImportError as e:
        raise ImportError(f"{folder}: an nnU-Net model folder needs the importer: pip install 'abdoseg[nnunet]' "
                          f"({e})") from e
    return cached_import(folder)


def _is_nnunet_card(spec: str) -> bool:
    from abdoseg.inference.card import card_path
    from abdoseg.inference.nnunet.card import is_nnunet_card

    return is_nnunet_card(card_path(spec))


def resolve_stages(requested: str, spec: str, model: Path | None) -> tuple[str, bool, str]:
    """(device, whether the card's fine stage runs, and why not when 'auto' passes it over) for the card `spec`.

    A card without a fine stage runs its coarse stage alone ('auto': on the CPU). With one, 'auto' runs it only
    when its fine card's validation record shows it at least as good as the coarse path on every organ
    (`fine_verdict`), on CUDA where `resolve_device` finds a GPU, a CUDA torch and the fine weights, else on the
    CPU; 'cpu' and 'cuda' run the card as it is. A card that cannot be read: loading it reports why."""
    from abdoseg.inference.card import load_card
    from abdoseg.inference.fine.card import fine_verdict_at

    try:
        card = load_card(spec, model)[0]
    except (ValueError, OSError):
        card = None
    if card is None or card.fine is None:
        return ("cpu" if requested == "auto" else requested), False, ""
    if requested == "auto" and (reason := fine_verdict_at(Path(card.fine), card.labelset)) is not None:
        return "cpu", False, f"fine stage not used: {reason}"
    device, note = resolve_device(requested, Path(card.fine), card.labelset)
    return device, True, note.replace("fine stage not used", "fine stage on the CPU") if note else ""


def _fmt_line(record: dict) -> str:
    if record["status"] != "ok":
        return f"{record['case']}: FAILED — {record['error']}"
    stages = " ".join(f"{k} {v:.2f}" for k, v in record["seconds"].items())
    gpu = "no GPU" if record["gpu_memory_mb"] is None else f"GPU in use {record['gpu_memory_mb']:.0f} MB"
    if "gpu_peak_allocated_mb" in record:
        gpu += f", torch peak {record['gpu_peak_allocated_mb']:.0f} MB"
    shape = "x".join(str(s) for s in record["input_size"])
    return (f"{record['case']}: {shape} | {stages} | total {record['total_s']:.2f} s | "
            f"peak RSS {record['peak_rss_mb']:.0f} MB | {gpu}{_found_text(record)}")


def _found_text(record: dict) -> str:
    """' | located ...' for a scan the locate stage searched, and ' | no organs found' for an empty result."""
    text = ""
    if "locate" in record:
        organs, scan_mm = record["locate"]["organs"], record["locate"]["scan_mm"]
        where = ("nothing" if organs["slices"][0] >= organs["slices"][1] else
                 f"z {organs['mm'][0]:.0f}-{organs['mm'][1]:.0f} mm (slices {organs['slices'][0]}-{organs['slices'][1]})")
        text += f" | located {where} of {scan_mm:.0f} mm"
    if record.get("organs_found") == []:
        text += " | no organs found"
    return text


def _announce(predictor, device: str, note: str = "") -> None:
    device = f"{device} ({note})" if note else device
    fine = getattr(predictor, "fine", None)
    fine = f"; fine stage {fine.card.name} ({fine.description})" if fine is not None else ""
    print(f"abdoseg: model {predictor.card.name} ({predictor.session.description}, device {device}{fine}) "
          f"opened in {predictor.session_load_s:.2f} s", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from abdoseg.inference.io.cases import check_case
    from abdoseg.inference.io.errors import failure_reason, shown
    from abdoseg.inference.pipeline import Predictor, StageClock

    threads = args.threads or usable_cpus()
    if args.model is not None and args.model.is_dir():  # an nnU-Net model folder: its card from the cache
        args.card, args.model = str(_imported_card(args.model)), None
    if _is_nnunet_card(args.card):  # its own runner: CUDA through onnxruntime's provider, no fine stage
        from abdoseg.inference.nnunet.predictor import resolve_nnunet_device

        device, device_note = resolve_nnunet_device(args.device)
        fine = False
    else:
        device, fine, device_note = resolve_stages(args.device, args.card, args.model)
    t0 = time.perf_counter()
    if args.warmup:
        predictor = Predictor.load(args.card, args.model, args.runtime, threads, device, args.cache_dir,
                                   tta=args.tta, fine=fine)
        _announce(predictor, device, device_note)
        predictor.segment(np.full((40, 64, 64), -1000, np.int16), (5.0, 6.0, 6.0))
        print(f"abdoseg: warm-up done in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
        return 0

    inputs = _resolved_inputs(args)
    if isinstance(inputs, int):
        return inputs
    # Card and checksum now; the runtime opens in a background thread while the first scan is read.
    predictor = Predictor.load(args.card, args.model, args.runtime, threads, device, args.cache_dir, background=True,
                               tta=args.tta, fine=fine)
    cases = _cases_to_run(inputs, args)
    if isinstance(cases, int):
        return cases
    inputs.out_dir.mkdir(parents=True, exist_ok=True)

    failures = 0
    for case in progress(cases):
        clock = StageClock()
        record: dict = {"case": case.label, "input": shown(case.path)}
        out_path = case.output_path(inputs.out_dir)
        try:
            check_case(case, out_path, inputs.in_dir)
            size = predict_case(predictor, case, inputs.out_dir, clock, ExtraOutputs.from_args(args))
            record.update(status="ok", input_size=list(size), output=shown(out_path))
        except ModelLoadError:
            raise  # not the case's fault: stop with one line (main)
        except Exception as e:  # noqa: BLE001 - whatever one scan provokes, the other cases go on
            failures += 1
            record.update(status="failed", error=failure_reason(e, case.path) + _drop_outputs(case, inputs))
        if case is cases[0]:
            _announce(predictor, device, device_note)
        _add_figures(record, clock, predictor, device)
        print(_fmt_line(record), file=sys.stderr)
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps(record) + "\n")
    if failures:
        print(f"abdoseg: {failures} of {len(cases)} case(s) failed", file=sys.stderr)
    return 1 if failures else 0


def _resolved_inputs(args: argparse.Namespace):
    """What -i and -o name (abdoseg.inference.io.cases.Inputs), or exit status 2 after one line saying why not."""
    from abdoseg.inference.io.cases import resolve_inputs
    from abdoseg.inference.io.errors import InputError

    if args.input is None or args.output is None:
        print("abdoseg: error: -i/--input and -o/--output are required", file=sys.stderr)
        return 2
    try:
        return resolve_inputs(args.input, args.output)
    except InputError as e:
        print(f"abdoseg: error: {e}", file=sys.stderr)
        return 2


def _cases_to_run(inputs, args: argparse.Namespace):
    """The cases of this run (its --shard), after a note per ignored name; or the exit status when there are
    none (1: none found, 0: an empty shard)."""
    from abdoseg.inference.io.cases import ignored_reason
    from abdoseg.inference.io.errors import shown

    for p in inputs.ignored:
        print(f"abdoseg: note: ignoring {shown(p.name)} ({ignored_reason(p, inputs.plain_names)})", file=sys.stderr)
    cases = inputs.cases
    if not cases:
        print(f"abdoseg: error: {shown(args.input)}: no cases found (scans <case>_0000.<ext> or <name>.<ext>, "
              ".nii.gz/.nii/.mha/.nrrd, or folders with a DICOM series)", file=sys.stderr)
        return 1
    if args.shard is not None:
        n_all, cases = len(cases), args.shard.select(cases)
        print(f"abdoseg: shard {args.shard}: {len(cases)} of {n_all} case(s)", file=sys.stderr)
        if not cases:
            return 0
    return cases


def _add_figures(record: dict, clock, predictor, device: str) -> None:
    """A case's log record gets the runtime, stage seconds, memory, the stages' details and the organs found."""
    from abdoseg.inference.process.resources import gpu_memory_mb, peak_rss_mb

    record.update(runtime=predictor.session.description, device=device,
                  model_load_s=round(predictor.session_load_s, 4))
    record["seconds"] = {k: round(v, 4) for k, v in clock.seconds.items()}
    record["total_s"] = round(sum(clock.seconds.values()), 4)
    record["peak_rss_mb"] = round(peak_rss_mb(), 1)
    record["gpu_memory_mb"] = gpu_memory_mb() if device == "cuda" else None
    record.update(clock.details)
    if clock.organs_found is not None:
        record["organs_found"] = clock.organs_found
    if "fine" in clock.details and "gpu_peak_allocated_bytes" in clock.details["fine"]:
        record["gpu_peak_allocated_mb"] = clock.details["fine"]["gpu_peak_allocated_bytes"] / 2**20


def _drop_outputs(case, inputs) -> str:
    """A failed case leaves no output: remove every output of its name (this run's or an earlier one's; never an
    input); a note for the case's line."""
    from abdoseg.inference.io.errors import shown
    from abdoseg.inference.outputs.case import remove_outputs

    removed, kept = remove_outputs(case, inputs.out_dir, inputs.in_dir)
    note = f"; removed its outputs {', '.join(shown(p.name) for p in removed)}" if removed else ""
    return note + (f"; could not remove {', '.join(kept)}" if kept else "")


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an interrupt so that it takes SIGINT's path (temporary files removed, one line)."""


@contextmanager
def _sigterm_as_interrupt():
    def interrupt(signum, frame):
        raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None and args.threads < 1:
        print(f"abdoseg: error: --threads must be >= 1, got {args.threads}", file=sys.stderr)
        return 2
    try:
        with _sigterm_as_interrupt():
            return run(args)
    except (ValueError, OSError, ImportError, ModelLoadError) as e:  # card/model/runtime problems: one line
        print(f"abdoseg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # SIGINT or SIGTERM: the case in progress left nothing behind
        signum = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
        print(f"abdoseg: stopped by {signal.Signals(signum).name}; the case in progress has no output",
              file=sys.stderr)
        return 128 + signum
