"""The two CPU runtimes behind one call: onnxruntime and OpenVINO, both reading the same ONNX graph.

A session takes the composed graph's inputs ("ct", plus "spacing" in spacing-mode cards) and returns its
"classes" output. OpenVINO is pinned to fp32 math: on CPUs with AMX/AVX512-BF16 its default precision is
bf16, which moves the resampled HU by up to ~20 HU and changes labels.
"""
from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

RuntimeName = Literal["openvino", "onnxruntime"]
RUNTIMES: tuple[RuntimeName, ...] = ("openvino", "onnxruntime")


class ModelLoadError(RuntimeError):
    """The runtime could not open the model."""


class Session(Protocol):
    input_names: tuple[str, ...]
    description: str

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Get ready for an input of this shape (OpenVINO static shapes compile here)."""
        ...

    def prepare_inputs(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Get ready for inputs of these shapes (by name; the others as the model states them)."""
        ...

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Return the graph's single output for the named inputs."""
        ...

    def release(self) -> None:
        """Free the buffers a run keeps (a no-op where the runtime keeps none)."""
        ...


#: What `import openvino` also imports and the runtime never uses: the model converter (convert_model), which
#: imports OpenVINO's telemetry, urllib and http.client and sends an "import" event. `openvino/__init__.py` imports
#: it inside `try/except ImportError`; blocking it saves a measurable part of every cold run (docs/decisions.md).
_CONVERTER = "openvino.tools.ovc"


_IMPORT_LOCK = threading.Lock()


def import_openvino():
    """`openvino`, imported without its model converter (a None entry in sys.modules makes that import fail,
    which openvino's __init__ tolerates); the entry is removed afterwards, so a later `import openvino.tools.ovc`
    still works. Thread-safe: sessions open in background threads (the coarse graph and the fine graph at once),
    and a second thread must not take the module from sys.modules while the first is still importing it."""
    with _IMPORT_LOCK:
        if "openvino" in sys.modules:
            return sys.modules["openvino"]
        blocked = _CONVERTER not in sys.modules
        if blocked:
            sys.modules[_CONVERTER] = None
        try:
            import openvino
        finally:
            if blocked and sys.modules.get(_CONVERTER, False) is None:
                del sys.modules[_CONVERTER]
        return openvino


class OnnxRuntimeSession:
    def __init__(self, model: Path | bytes, threads: int, use_cuda: bool = False) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.enable_cpu_mem_arena = False  # the arena keeps ~0.6 GB more at peak for this network
        opts.enable_mem_pattern = False  # a replayed pattern raised the second run's peak by ~0.4 GB
        wanted = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()]
        source = str(model) if isinstance(model, Path) else model
        self._session = ort.InferenceSession(source, opts, providers=providers)
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.description = f"onnxruntime {ort.__version__} {'/'.join(self._session.get_providers())}, {threads} threads"

    def prepare(self, shape: tuple[int, ...]) -> None:
        pass

    def prepare_inputs(self, shapes: dict[str, tuple[int, ...]]) -> None:
        pass

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self._session.run(None, feeds)[0]

    def release(self) -> None:
        pass


class OpenVinoSession:
    """OpenVINO CPU, fp32. With `static_shapes`, the graph is compiled for each new input shape (cached per
    shape, the last one kept): OpenVINO then plans all buffers statically and peaks ~0.45 GB lower on a 512x512x336
    scan than with the dynamic-shape graph, for the same compile time in a cold process (docs/decisions.md).
    Without it, the graph is compiled once as its file states its shapes (static or not); from a file with a
    cache folder, OpenVINO then finds the compiled blob by the file alone, without parsing the model first."""

    def __init__(self, model: Path | bytes, threads: int, cache_dir: Path | None = None,
                 static_shapes: bool = True, release_after_run: bool = True) -> None:
        ov = import_openvino()
        self._ov = ov
        self._core = ov.Core()
        self._config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads,
                        "PERFORMANCE_HINT": "LATENCY"}
        if cache_dir is not None and _writable_folder(Path(cache_dir)):
            self._config["CACHE_DIR"] = str(cache_dir)
        self._source = model
        self._static = static_shapes
        self._release = release_after_run  # False: keep the activation buffers between runs (steady-state timing)
        self._requests: dict[tuple | None, tuple] = {}
        self._model = self._read_model() if static_shapes else None
        ports = self._model.inputs if static_shapes else self._request_for(None)[0].inputs
        self.input_names = tuple(i.get_any_name() for i in ports)
        kind = "static shapes" if static_shapes else "shapes as stated"
        self.description = f"openvino {ov.get_version().split('-')[0]} CPU f32 {kind}, {threads} threads"

    def _read_model(self):
        model = self._source
        return self._core.read_model(str(model)) if isinstance(model, Path) else self._core.read_model(model, b"")

    def _request_for(self, shapes: tuple[tuple[str, tuple[int, ...]], ...] | None):
        if shapes not in self._requests:
            self._requests.clear()  # one compiled shape at a time: each holds its buffers (~1.4 GB)
            if shapes is not None:
                model = self._model.clone()
                model.reshape({name: self._ov.PartialShape(list(shape)) for name, shape in shapes})
            else:  # as the file states it: compiled from the path when there is one (no parse on a cache hit)
                model = str(self._source) if isinstance(self._source, Path) else self._read_model()
            try:
                compiled = self._core.compile_model(model, "CPU", self._config)
            except RuntimeError:  # e.g. a read-only cache without this blob: compile without the cache
                if "CACHE_DIR" not in self._config:
                    raise
                self._config.pop("CACHE_DIR")
                compiled = self._core.compile_model(model, "CPU", self._config)
            self._requests[shapes] = (compiled, compiled.create_infer_request())
        return self._requests[shapes]

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Compile for a "ct" shape ahead of the first run with it (no-op with dynamic shapes).

        The model's other inputs (e.g. "spacing" [3]) have static shapes: they enter the key as they are.
        """
        self.prepare_inputs({"ct": tuple(shape)})

    def prepare_inputs(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Compile for these input shapes (by name; the other inputs must have static shapes)."""
        if self._static:
            fixed = {i.get_any_name(): tuple(i.get_shape()) for i in self._model.inputs
                     if i.get_any_name() not in shapes and i.get_partial_shape().is_static}
            self._request_for(self._key({**fixed, **shapes}))

    @staticmethod
    def _key(shapes: dict[str, tuple[int, ...]]) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple(sorted((name, tuple(int(d) for d in shape)) for name, shape in shapes.items()))

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        key = self._key({name: a.shape for name, a in feeds.items()}) if self._static else None
        compiled, request = self._request_for(key)
        result = next(iter(request.infer(feeds, share_inputs=True, share_outputs=False).values()))
        if self._release:  # ~1.2 GB of activations, not needed while the labels are upsampled and written
            compiled.release_memory()
        return result

    def release(self) -> None:
        for compiled, _ in self._requests.values():
            compiled.release_memory()


def _writable_folder(folder: Path) -> bool:
    """Whether `folder` exists or can be made (a cache that cannot is skipped, never an error)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return folder.is_dir()
    return True


def open_session(model: Path | bytes, runtime: RuntimeName, threads: int, use_cuda: bool = False,
                 cache_dir: Path | None = None, static_shapes: bool = True, release_after_run: bool = True) -> Session:
    """Open a session for an ONNX graph (a file path, or serialized ONNX bytes); `release_after_run`: OpenVINO
    frees the activation buffers after each run (False: they stay for the next run, until `release`)."""
    if runtime == "onnxruntime" or use_cuda:  # the GPU coarse stage runs through onnxruntime's CUDA provider
        return OnnxRuntimeSession(model, threads, use_cuda)
    if runtime == "openvino":
        return OpenVinoSession(model, threads, cache_dir, static_shapes, release_after_run)
    raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
