"""Leave-one-patient-out: held-out cases never enter training, and are scored at the end through the pipeline.

`abdoseg train --hold-out CASE` removes CASE from the training and validation cases (validation, which picks
`best.pt` and drives the schedule, runs on the training cases only: nothing is selected on the held-out case).
When the run ends, its final network segments each held-out scan through the inference pipeline's own stages
(read, canonical, the resample graph, labels and component rule, upsample, write on the input's grid), with
the torch network standing in for the ONNX network export would compose (export's parity check holds the two
equal). The label maps go to `RUN/held_out/<case>.nii.gz`; the scores (abdoseg.evaluation.held_out) to
`RUN/held_out.json` and `RUN/held_out.csv`, with the budget and the CPU that trained it.
"""
from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from abdoseg.training.data import Case, Resampler
from abdoseg.training.windows import hu_to_channels

if TYPE_CHECKING:
    from abdoseg.evaluation.held_out import HeldOutScore
    from abdoseg.training.train import TrainConfig

log = logging.getLogger("training")


def split_held_out(cases: list[Case], hold_out: tuple[str, ...]) -> tuple[list[Case], list[Case]]:
    """(training pool, held-out cases); ValueError naming an unknown case or an empty training pool."""
    names = [c.name for c in cases]
    unknown = sorted(set(hold_out) - set(names))
    if unknown:
        raise ValueError(f"--hold-out {', '.join(unknown)}: no such case; the cases are {', '.join(names)}")
    pool = [c for c in cases if c.name not in hold_out]
    if not pool:
        raise ValueError(f"--hold-out {', '.join(hold_out)} leaves no case to train on")
    return pool, [c for c in cases if c.name in hold_out]


class TorchClasses:
    """A pipeline Session whose network is a torch module: the inference resample graph (onnxruntime), the
    torch window twin, the network, ArgMax -> uint8 classes on the model grid."""

    input_names = ("ct", "spacing")
    description = "torch network behind the inference resample graph"

    def __init__(self, model: torch.nn.Module, resampler: Resampler) -> None:
        self.model, self.resampler = model.eval(), resampler

    def prepare(self, shape: tuple[int, ...]) -> None:
        pass

    def prepare_inputs(self, shapes: dict[str, tuple[int, ...]]) -> None:
        pass

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        low = torch.from_numpy(self.resampler(feeds["ct"], tuple(float(s) for s in feeds["spacing"])))
        with torch.no_grad():
            return self.model(hu_to_channels(low)[None]).argmax(1)[0].numpy().astype(np.uint8)

    def release(self) -> None:
        pass


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def held_out_report(model: torch.nn.Module, cfg: TrainConfig, held: list[Case], run_dir: Path,
                    budget: dict) -> list[HeldOutScore]:
    """Segment each held-out case with `model` through the pipeline, score it, write the report; return its rows."""
    from abdoseg.evaluation.held_out import format_held_out, score_held_out_files, write_report
    from abdoseg.evaluation.labelsets import get_labelset
    from abdoseg.evaluation.report import write_csv
    from abdoseg.inference.card import ModelCard
    from abdoseg.inference.pipeline import Predictor
    from abdoseg.training.train import network_classes

    card = ModelCard(name="held-out", model_file="", sha256=None, graph="composed", geometry=cfg.geometry,
                     class_to_label=(0, *range(network_classes(cfg.labelset) - 1)), labelset=cfg.labelset)
    predictor = Predictor(card, session=TorchClasses(model.cpu(), Resampler(cfg.geometry)))
    out_dir = Path(run_dir) / "held_out"
    out_dir.mkdir(parents=True, exist_ok=True)
    labelset, rows = get_labelset(cfg.labelset), []
    for case in held:
        prediction = out_dir / f"{case.name}.nii.gz"
        predictor.predict_file(case.image, prediction)
        rows += score_held_out_files(case.name, case.label, prediction, labelset)
    context = {"held_out": [c.name for c in held], "trained_on": budget.pop("trained_on"), **budget,
               "cpu": cpu_name(), "torch_threads": torch.get_num_threads(), "network": "final (last.pt)"}
    write_report(Path(run_dir) / "held_out.json", rows, context)
    write_csv(Path(run_dir) / "held_out.csv", rows)
    log.info("held-out scores of the final network (%s):\n%s", context, format_held_out(rows))
    return rows
