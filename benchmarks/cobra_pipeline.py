#!/usr/bin/env python3
"""COBRA's published inference pipeline, for benchmark ratios only (bench_pipeline.py runs it as a cold process).

    python benchmarks/cobra_pipeline.py PEER.onnx IN.nii.gz OUT.nii.gz [--threads N]

As rrr-uom-projects/FLARE21 docker/inference.py does it: SimpleITK resample of the whole scan to 96x192x192
(B-spline, as the issue that asked for this row specifies; that script's own default is linear), int16, a CC+LR
flip when the last direction cosine is -1, the two HU windows, the peer network in onnxruntime, argmax, labels
max(class - 1, 0) clipped to 4, nearest-neighbour resample back onto the input grid, write. Numpy replaces its
numba window kernel; onnxruntime gets the same thread count as our pipeline (its script uses cpu_count - 1).
The peer file comes from ../shared/peers/cobra and is never shipped (no licence).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
SHAPE = (96, 192, 192)  # z, y, x
WINDOWS = ((50, 400), (60, 100))


def windows(hu: np.ndarray) -> np.ndarray:
    out = np.empty((1, 2, *hu.shape), np.float32)
    for c, (level, width) in enumerate(WINDOWS):
        lo = level - width // 2
        out[0, c] = (np.clip(hu, lo, lo + width).astype(np.float32) - lo) / width
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    image = sitk.ReadImage(a.input)
    reference = sitk.Image(SHAPE[::-1], image.GetPixelIDValue())
    reference.SetOrigin(image.GetOrigin())
    reference.SetDirection(image.GetDirection())
    spacing = [sz * sp / n for n, sz, sp in zip(SHAPE[::-1], image.GetSize(), image.GetSpacing())]
    reference.SetSpacing(spacing)
    hu = sitk.GetArrayFromImage(sitk.Resample(image, reference, sitk.Transform(), sitk.sitkBSpline)).astype(np.int16)
    flipped = image.GetDirection()[-1] == -1
    if flipped:
        hu = hu[::-1, :, ::-1]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.intra_op_num_threads = a.threads
    session = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    scores = session.run(None, {"img": windows(hu)})[0][0]
    labels = np.minimum(4, np.maximum(np.argmax(scores, axis=0) - 1, 0)).astype(np.int8)
    if flipped:
        labels = np.ascontiguousarray(labels[::-1, :, ::-1])
    low = sitk.GetImageFromArray(labels)
    low.SetOrigin(image.GetOrigin())
    low.SetDirection(image.GetDirection())
    low.SetSpacing(spacing)
    out = sitk.Resample(low, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkInt8)
    sitk.WriteImage(out, a.output)
    from abdoseg.inference.process.resources import peak_rss_mb  # noqa: E402 - the VmHWM our pipeline logs

    print(f"peak_rss_mb {peak_rss_mb():.1f}")


if __name__ == "__main__":
    main()
