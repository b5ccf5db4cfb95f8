"""`python -m abdoseg validate-fine`: write a fine card's validation record (the fine path against the CPU path,
per organ, on the same scans) from `benchmarks/bench_gpu.py --json` summaries, one per scan. `--device auto`
uses the fine stage only when this record shows it at least as good on every organ (abdoseg.inference.fine.card)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from abdoseg.inference.fine.card import FINE_CARD_NAME, FineCard, OrganScore, Validation, fine_verdict
from abdoseg.inference.labels import label_map


def validation_from_summaries(summaries: Sequence[dict], labelset: str, note: str = "") -> Validation:
    """Means over the scans of each organ's DSC and NSD, for the CPU path ("coarse") and the fine path."""
    if not summaries:
        raise ValueError("no bench_gpu summaries")
    organs = list(label_map(labelset).organs.values())
    for s in summaries:
        if "accuracy" not in s:
            raise ValueError(f"{s.get('scan')}: the summary has no accuracy (was it run without labels?)")
        if s.get("labelset", labelset) != labelset:
            raise ValueError(f"{s.get('scan')}: scored with {s['labelset']} labels, the card's are {labelset}")
        if len(s["accuracy"]["fine_path"]["dsc"]) != len(organs):
            raise ValueError(f"{s.get('scan')}: {len(s['accuracy']['fine_path']['dsc'])} organs scored, "
                             f"{labelset} has {len(organs)}")

    def means(path: str) -> dict[str, OrganScore]:
        dsc = np.mean([s["accuracy"][path]["dsc"] for s in summaries], axis=0)
        nsd = np.mean([s["accuracy"][path]["nsd_1mm"] for s in summaries], axis=0)
        return {o: OrganScore(round(float(d), 4), round(float(n), 4)) for o, d, n in zip(organs, dsc, nsd)}

    coarse = {s.get("coarse", "") for s in summaries} - {""}
    metric = "DSC and NSD@1mm (abdoseg/evaluation/, FLARE rules), means over the scans"
    metric += "".join(f"; CPU path: {c}" for c in sorted(coarse)) + (f"; {note}" if note else "")
    scans = tuple(Path(s["scan"]).name.removesuffix(".nii.gz").removesuffix("_0000") for s in summaries)
    return Validation(scans=scans, coarse=means("cpu_path"), fine=means("fine_path"), metric=metric)


def record_validation(weights: Path, summary_paths: Sequence[Path], note: str = "",
                      card_name: str = FINE_CARD_NAME) -> FineCard:
    """Rewrite `weights`/`card_name` with the validation record of the summaries (weights and sha256 unchanged)."""
    card_path = weights / card_name
    card = FineCard.from_dict(json.loads(card_path.read_text()))
    summaries = [json.loads(Path(p).read_text()) for p in summary_paths]
    card = dataclasses.replace(card, validation=validation_from_summaries(summaries, card.labelset, note))
    card.save(card_path)
    return card


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="abdoseg validate-fine", description=__doc__)
    p.add_argument("--weights", type=Path, required=True, help="folder with fine.json + fine.pt")
    p.add_argument("--card", default=FINE_CARD_NAME, help=f"the fine card's file name in --weights ({FINE_CARD_NAME})")
    p.add_argument("--note", default="", help="where and how the summaries were measured")
    p.add_argument("summaries", type=Path, nargs="+", help="bench_gpu.py --json files, one per scan")
    args = p.parse_args(argv)
    try:
        card = record_validation(args.weights, args.summaries, args.note, args.card)
    except (OSError, ValueError, KeyError) as e:
        print(f"validate-fine: error: {e}", file=sys.stderr)
        return 2
    verdict = fine_verdict(card)
    print(f"validate-fine: wrote the record into {args.weights / args.card}; --device auto "
          + ("uses the fine stage" if verdict is None else f"will not use it: {verdict}"))
    return 0
