"""Shared test helpers: where the bundled data is, and the real scans by case name.

Submodules: synthetic (synthetic scans, toy networks), hostile (hostile scan files), slice_toy (a toy 2D card),
fine (tiny fine-stage networks and cards), training (the quick training configuration), image_context (the files a
container build copies). Tests import helpers from here, never from conftest.py or from other test modules.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared"
CASES = ("abdpelvis3mm", "upperabd1mm")


def real_image(case: str) -> Path:
    return DATA / "flare21" / "imagesTr" / f"{case}_0000.nii.gz"


def real_label(case: str) -> Path:
    return DATA / "flare21" / "labelsTr" / f"{case}.nii.gz"
