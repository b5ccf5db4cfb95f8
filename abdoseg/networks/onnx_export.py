"""Export a 2D (slice-wise) network to ONNX: "slices" [B, C, H, W] → "logits" [B, n_classes, H, W].

The batch axis is dynamic (the pipeline runs batches of axial slices, their number bounded by memory);
H and W are fixed to the export shape unless `dynamic_hw`. Deep supervision is switched off for the export,
so the graph has the full-resolution logits only; BatchNorm runs in inference form.
"""
from __future__ import annotations

import copy
import io
import warnings

import torch
from torch import nn

from abdoseg.networks.registry import set_deep_supervision

OPSET = 17


def slices_onnx_bytes(model: nn.Module, in_channels: int, hw: tuple[int, int], dynamic_hw: bool = False) -> bytes:
    """The serialised ONNX graph of `model` for slices of `in_channels` × `hw` (the model is left unchanged)."""
    model = set_deep_supervision(copy.deepcopy(model).cpu().eval(), False)
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        warnings.filterwarnings("ignore", message=".*instance_norm.*train=True")  # instance norm: always input statistics
        torch.onnx.export(
            model, (torch.zeros(2, in_channels, *hw),), buffer, input_names=["slices"], output_names=["logits"],
            dynamic_axes={"slices": axes, "logits": axes}, opset_version=OPSET, dynamo=False,
        )
    return buffer.getvalue()
