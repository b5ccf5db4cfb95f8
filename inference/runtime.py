"""The two CPU runtimes behind one call: onnxruntime and OpenVINO, both reading the same ONNX graph.

A session takes the composed graph's inputs ("ct", plus "spacing" in spacing-mode cards) and returns its
"classes" output. OpenVINO is pinned to fp32 math: on CPUs with AMX/AVX512-BF16 its default precision is
bf16, which moves the resampled HU by up to ~20 HU and changes labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import numpy as np

RuntimeName = Literal["openvino", "onnxruntime"]
RUNTIMES: tuple[RuntimeName, ...] = ("openvino", "onnxruntime")


class Session(Protocol):
    input_names: tuple[str, ...]
    description: str

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Return the graph's single output for the named inputs."""
        ...


class OnnxRuntimeSession:
    def __init__(self, model: Path | bytes, threads: int, use_cuda: bool = False) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        wanted = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()]
        source = str(model) if isinstance(model, Path) else model
        self._session = ort.InferenceSession(source, opts, providers=providers)
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.description = f"onnxruntime {ort.__version__} {'/'.join(self._session.get_providers())}, {threads} threads"

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(None, feeds)[0]


class OpenVinoSession:
    def __init__(self, model: Path | bytes, threads: int, cache_dir: Path | None = None) -> None:
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(cache_dir)
        if isinstance(model, Path):
            compiled = core.compile_model(str(model), "CPU", config)
        else:  # in-memory ONNX (a network composed at load time)
            compiled = core.compile_model(core.read_model(model, b""), "CPU", config)
        self._request = compiled.create_infer_request()
        self.input_names = tuple(i.get_any_name() for i in compiled.inputs)
        self.description = f"openvino {ov.get_version().split('-')[0]} CPU f32, {threads} threads"

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        result = self._request.infer(feeds, share_inputs=True, share_outputs=False)
        return next(iter(result.values()))


def open_session(model: Path | bytes, runtime: RuntimeName, threads: int, use_cuda: bool = False,
                 cache_dir: Path | None = None) -> Session:
    """Open a session for the composed graph (a file path, or serialized ONNX bytes)."""
    if runtime == "onnxruntime" or use_cuda:  # the GPU coarse stage runs through onnxruntime's CUDA provider
        return OnnxRuntimeSession(model, threads, use_cuda)
    if runtime == "openvino":
        return OpenVinoSession(model, threads, cache_dir)
    raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
