"""Warm start: a CobraUNet checkpoint rebuilt from a shipped composed ONNX file, to fine-tune the shipped weights.

The exporter folds each BatchNorm into the convolution before it, so the file holds the folded convolutions
(and the few BatchNorms that follow transposed convolutions). The rebuilt network gets those weights and
identity BatchNorms (scale 1, shift 0, mean 0, variance 1 - eps): in eval mode it computes exactly what the
file computes. Fine-tune it with frozen normalisation (`python -m abdoseg train --freeze-norm`), since a
BatchNorm in training mode would normalise by batch statistics the folded weights no longer expect.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from abdoseg.networks.cobra_unet import CobraUNet

NET_PREFIX = "net/"


def _onnx_layers(path: Path) -> tuple[list[tuple[str, list[np.ndarray]]], list[list[np.ndarray]]]:
    """(conv op type, [weight, bias]) in graph order, and the [scale, shift, mean, var] of each BatchNorm."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs, norms = [], []
    for node in model.graph.node:
        if not node.name.startswith(NET_PREFIX) and not any(i.startswith(NET_PREFIX) for i in node.input):
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            convs.append((node.op_type, [inits[name] for name in node.input[1:]]))
        elif node.op_type == "BatchNormalization":
            norms.append([inits[name] for name in node.input[1:]])
    return convs, norms


def network_from_onnx(path: Path) -> CobraUNet:
    """A CobraUNet (eval mode) equal to the network inside a composed ONNX file exported by abdoseg.training.export."""
    convs, norms = _onnx_layers(Path(path))
    model = CobraUNet().eval()
    if convs and convs[-1][1][0].shape[0] != model.head.out_channels:  # a model of another label set
        model.head = nn.Conv3d(model.head.in_channels, convs[-1][1][0].shape[0], 1)
    torch_convs = [m for m in model.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    if len(torch_convs) != len(convs):
        raise ValueError(f"{path}: {len(convs)} convolutions, the network has {len(torch_convs)}")
    with torch.no_grad():
        for module, (op, arrays) in zip(torch_convs, convs):
            if (op == "ConvTranspose") != isinstance(module, nn.ConvTranspose3d) or module.weight.shape != arrays[0].shape:
                raise ValueError(f"{path}: layer {op} {arrays[0].shape} does not match {module}")
            module.weight.copy_(torch.from_numpy(np.array(arrays[0])))
            module.bias.copy_(torch.from_numpy(np.array(arrays[1])) if len(arrays) > 1 else torch.zeros_like(module.bias))
        after_transposed = [_norm_after(model, m) for m in torch_convs if isinstance(m, nn.ConvTranspose3d)]
        if len(after_transposed) != len(norms):
            raise ValueError(f"{path}: {len(norms)} BatchNorms left in the file, expected {len(after_transposed)}")
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm3d)):
            bn.weight.fill_(1.0), bn.bias.zero_(), bn.running_mean.zero_(), bn.running_var.fill_(1.0 - bn.eps)
        for bn, (scale, shift, mean, var) in zip(after_transposed, norms):
            for target, value in ((bn.weight, scale), (bn.bias, shift), (bn.running_mean, mean), (bn.running_var, var)):
                target.copy_(torch.from_numpy(np.array(value)))
    return model


def _norm_after(model: nn.Module, conv: nn.Module) -> nn.BatchNorm3d:
    """The BatchNorm that directly follows `conv` in its Sequential."""
    for seq in (m for m in model.modules() if isinstance(m, nn.Sequential)):
        children = list(seq)
        for a, b in zip(children, children[1:]):
            if a is conv and isinstance(b, nn.BatchNorm3d):
                return b
    raise ValueError(f"no BatchNorm follows {conv}")


def write_checkpoint(onnx_path: Path, out: Path) -> Path:
    """Save `{"model": state_dict}` for `python -m abdoseg train --init-from OUT --freeze-norm`."""
    torch.save({"model": network_from_onnx(onnx_path).state_dict(), "source": str(onnx_path)}, out)
    return Path(out)
