"""nnU-Net v2 model folders (`RESULTS/DatasetXXX/TRAINER__PLANS__CONFIGURATION`) imported as abdoseg-nnunet cards.

The network is rebuilt with nnU-Net's own classes from the plans (dynamic_network_architectures via nnunetv2's
get_network_from_plans), each fold's checkpoint loaded into it, exported to ONNX and checked against torch. The card
format is described in docs/nnunet.md. The names below are imported on first use, so that `abdoseg import-nnunet
--help` needs neither torch nor nnunetv2.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"ImportRefused": "folder", "ModelFolder": "folder", "read_model_folder": "folder",
            "import_model_folder": "importer", "cached_import": "cache"}
__all__ = ["ImportRefused", "ModelFolder", "cached_import", "import_model_folder", "read_model_folder"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
