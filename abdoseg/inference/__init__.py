"""abdoseg inference: CT scans in, FLARE21 organ label maps out (CPU-first; optional GPU fine stage).

Import-light on purpose: heavy runtimes (SimpleITK, onnxruntime, OpenVINO, onnx, torch) load inside the
modules that need them, so `python -m abdoseg predict --help` and the model-card code start fast.
"""
