"""The process settings a cold run needs before numpy loads: set by `python -m abdoseg predict` (abdoseg/__main__.py)
and by the benchmark's floor process (benchmarks/floor_process.py), which must match it. Imports nothing heavy."""
import os


def set_process_environment() -> None:
    """Defaults (a value the caller already set is kept) read by numpy's libraries when they load."""
    # numpy's OpenBLAS starts a worker per core on its first call (here, 3x3 SVDs of direction matrices) and they
    # busy-wait afterwards, taking a core from OpenVINO (perf; docs/decisions.md).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # numpy asks for transparent huge pages on large arrays; where the kernel compacts memory to find them on a
    # fault (THP defrag "madvise"), the first touch of the scan, the upsampled labels etc. stalls (measured:
    # docs/decisions.md).
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
