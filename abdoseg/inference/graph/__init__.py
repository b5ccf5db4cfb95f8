"""The segmentation graph and the runtimes that run it.

preprocess_graph (the one preprocessing definition, as ONNX: resample + intensity, composed with a network),
slice_graph (the same for 2D networks over axial slices), staged (the graph as cached compiled parts for a fast
cold run), runtime (onnxruntime and OpenVINO behind one call).
"""
