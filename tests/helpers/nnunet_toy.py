"""A toy nnU-Net card written to the import contract (docs/nnunet.md), for runtime tests without torch or nnunetv2.

Each fold is a small ONNX network with nnU-Net's building blocks: conv -> instance norm -> leaky ReLU -> 1x1 conv,
so a window's statistics matter, as in nnU-Net's networks; the weights are seeded per fold.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

LABELS = {0: "background", 1: "liver", 2: "kidney_left"}


def toy_fold_network(in_channels: int, n_classes: int, dims: int, seed: int, hidden: int = 4):
    """ONNX: "image" [N, C, *spatial] (N and the spatial sizes free) -> "logits" [N, n_classes, *spatial]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.6, (hidden, in_channels, *[3] * dims)).astype(np.float32)
    w2 = rng.normal(0, 1.0, (n_classes, hidden, *[1] * dims)).astype(np.float32)
    b2 = rng.normal(0, 0.3, n_classes).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["image", "w1"], ["h1"], pads=[1] * (2 * dims)),
        helper.make_node("InstanceNormalization", ["h1", "gamma", "beta"], ["h2"], epsilon=1e-5),
        helper.make_node("LeakyRelu", ["h2"], ["h3"], alpha=0.01),
        helper.make_node("Conv", ["h3", "w2", "b2"], ["logits"]),
    ]
    spatial = [f"s{i}" for i in range(dims)]
    graph = helper.make_graph(
        nodes, "toy_nnunet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", in_channels, *spatial])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", n_classes, *spatial])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                     numpy_helper.from_array(b2, "b2"),
                     numpy_helper.from_array(rng.uniform(0.5, 1.5, hidden).astype(np.float32), "gamma"),
                     numpy_helper.from_array(rng.normal(0, 0.2, hidden).astype(np.float32), "beta")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def write_toy_nnunet_card(folder: Path, configuration: str = "3d_fullres", folds=(0, 1), name: str = "toy_nnunet",
                          spacing=(3.0, 2.0, 2.0), patch=(16, 32, 32), previous_stage: str | None = None,
                          mirror_axes=(0, 1, 2), transpose_forward=(0, 1, 2), **extra) -> Path:
    """Write NAME.json and NAME.fold_<k>.onnx into `folder`; return the card's path."""
    import onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_classes = len(LABELS)
    in_channels = 1 + (n_classes - 1 if previous_stage else 0)
    dims = 2 if configuration == "2d" else 3
    if dims == 2:
        spacing, patch, mirror_axes = spacing[1:], patch[1:], tuple(a for a in mirror_axes if a < 2)
    onnx_files = {}
    for fold in folds:
        onnx_files[str(fold)] = f"{name}.fold_{fold}.onnx"
        onnx.save(toy_fold_network(in_channels, n_classes, dims, seed=fold + 10 * dims), folder / onnx_files[str(fold)])
    backward = [int(i) for i in np.argsort(transpose_forward)]
    card = {
        "format": "abdoseg-nnunet-card/1", "name": name, "configuration": configuration,
        "source": {"folder": f"toyTrainer__toyPlans__{configuration}", "nnunetv2_version": "n/a"},
        "labels": {str(k): v for k, v in LABELS.items()}, "channel_names": {"0": "CT"},
        "n_classes": n_classes, "in_channels": in_channels, "spacing": list(spacing),
        "transpose_forward": list(transpose_forward), "transpose_backward": backward,
        "normalization": [{"scheme": "CTNormalization", "mean": 40.0, "std": 120.0, "lower": -900.0, "upper": 300.0}],
        "patch_size": list(patch), "step": 0.5, "sigma_scale": 0.125, "mirror_axes": list(mirror_axes),
        "folds": list(folds), "onnx": onnx_files,
        "resampling": {k: {"fn": "resample_data_or_seg_to_shape",
                           "kwargs": {"is_seg": k == "seg", "order": 3 if k == "data" else 1, "order_z": 0,
                                      "force_separate_z": None}}
                       for k in ("data", "probabilities", "seg")},
        "previous_stage": None if previous_stage is None else {"configuration": "3d_lowres", "card": previous_stage},
        "parity": None, **extra,
    }
    path = folder / f"{name}.json"
    path.write_text(json.dumps(card, indent=1))
    return path
