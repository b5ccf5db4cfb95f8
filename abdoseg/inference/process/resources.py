"""Process resources: usable CPU count (cgroup/affinity aware), peak memory, GPU presence and memory."""
from __future__ import annotations

import math
import os
import resource
from pathlib import Path


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: CPU affinity, capped by a cgroup (v2 or v1) CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root)
    if quota:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs allowed by the cgroup quota (v2 cpu.max, else v1 cfs quota/period), or None when unlimited."""
    try:
        q, period = (root / "cpu.max").read_text().split()[:2]
        return None if q == "max" else int(q) / int(period)
    except (OSError, ValueError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return q / period if q > 0 else None
    except (OSError, ValueError):
        return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB: the kernel's VmHWM of this process image (getrusage's
    ru_maxrss would also count the pages a big parent had when it forked this process before the exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_present() -> bool:
    """An NVIDIA GPU is visible (checked without importing any GPU library)."""
    return Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/nvidia0").exists()


def gpu_memory_mb() -> float | None:
    """Device memory in use on GPU 0 (MB) via NVML, or None when no GPU / NVML is available."""
    if not gpu_present():
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).used / 2**20
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML missing or failing means "not measurable", never a failed case
        return None
