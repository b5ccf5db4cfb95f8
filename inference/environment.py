"""The process settings a cold run needs before numpy loads: set by `python -m inference` (inference/__main__.py)
and by the benchmark's floor process (benchmarks/floor_process.py), which must match it. Imports nothing heavy."""
import os


def set_process_environment() -> None:
    """Defaults (a value the caller already set is kept) read by numpy's libraries when they load."""
    # numpy's OpenBLAS starts a worker per core on its first call (here, 3x3 SVDs of direction matrices) and they
    # busy-wait afterwards, taking a core from OpenVINO: 2.8 % of a cold run's CPU time on a 2-core EPYC (perf).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # numpy asks for transparent huge pages on large arrays; where the kernel compacts memory to find them on a
    # fault (THP defrag "madvise", as here), the first touch of the scan, the upsampled labels etc. stalls: with
    # this off, the upsample took 0.19 against 0.37 s and the read 1.55 against 1.84 s on 512x512x672 (medians of 6
    # alternating runs).
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
