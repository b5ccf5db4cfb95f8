"""One fold's network as ONNX, checked against torch on a random patch.

"image" float32 [N, C, *patch] -> "logits" float32 [N, n_classes, *patch]; N is dynamic, the spatial axes are the
patch (the runtime runs nnU-Net's sliding windows, and instance norm makes a window's statistics part of the result).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

OPSET = 17
#: |torch - onnxruntime| accepted, relative to the largest |logit| (at least 1): fp32 differs by ~1e-5 of it
PARITY_TOLERANCE = 1e-4


def onnx_bytes(network: nn.Module, in_channels: int, patch_size: tuple[int, ...], trace_size: tuple[int, ...]) -> bytes:
    """The serialised graph (TorchScript exporter, as the project's other exports), its spatial axes the patch.

    The trace runs on a `trace_size` input (the smallest the network takes) with free spatial axes, which are then
    fixed to the patch: a full-size network traced at its 64x192x192 patch held ~5 GB and a minute of forward pass.
    """
    import onnx

    spatial = {2 + i: f"s{i}" for i in range(len(patch_size))}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
        warnings.filterwarnings("ignore", message=".*instance_norm.*train=True")  # instance norm: input statistics
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks traced as constants: shapes fixed
        torch.onnx.export(network.eval(), (torch.zeros(1, in_channels, *trace_size),), buffer,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N", **spatial}, "logits": {0: "N", **spatial}},
                          opset_version=OPSET, dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    del model.graph.value_info[:]  # intermediate shapes of the trace; onnxruntime infers them for the patch
    for value in (model.graph.input[0], model.graph.output[0]):
        for axis, size in enumerate(patch_size, start=2):
            value.type.tensor_type.shape.dim[axis].dim_value = int(size)
    return model.SerializeToString()


def logit_parity(network: nn.Module, graph: bytes, in_channels: int, patch_size: tuple[int, ...],
                 seed: int = 0) -> tuple[float, float]:
    """(largest |torch - onnxruntime| logit, largest |torch logit|) on a random patch, values ~ N(0, 1) as CT after
    the z-score."""
    import onnxruntime as ort

    patch = np.random.default_rng(seed).standard_normal((1, in_channels, *patch_size)).astype(np.float32)
    with torch.no_grad():
        expected = network.eval()(torch.from_numpy(patch)).numpy()
    session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"image": patch})[0]
    return float(np.max(np.abs(got - expected))), float(np.max(np.abs(expected)))


def write_atomically(path: Path, data: bytes) -> None:
    """`data` at `path`, written to a temporary file beside it and renamed: never a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
