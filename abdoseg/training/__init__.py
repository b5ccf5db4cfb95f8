"""abdoseg training: torch training of the segmentation network and its ONNX export.

Import-light on purpose: torch and the data code load inside the submodules that need them.
"""
