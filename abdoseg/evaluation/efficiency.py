"""Time a prediction command case by case, the FLARE organisers' way, while sampling GPU memory, CPU and RAM.

Each case's image is copied alone into a fresh ``inputs`` folder beside an empty ``outputs`` folder; the
command (``{inputs}``/``{outputs}`` substituted) runs from start to exit while a background thread samples,
every ``interval_s``: GPU memory in use (NVML via nvidia-ml-py, device ``gpu_index``; 0 without a GPU),
host CPU utilisation (psutil, % of all cores) and host RAM in use (``virtual_memory().used``, the whole
host as the organisers measure it; ``ram_start_mib``, the first sample, shows what was in use before).

Measures per case (as the organisers' ``load_json.py``): max GPU memory over values seen in more than 2 %
of the samples; areas under the GPU-memory, CPU and RAM curves (value × time, each sample held until the
next one: the organisers' sum × 0.1 s, with the measured intervals).
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

MIB = 2**20
IMAGE_SUFFIX = "_0000.nii.gz"
TIMEOUT_EXIT_CODE = 124


@dataclass(frozen=True)
class Sample:
    """One reading, ``time_s`` after the sampler started."""

    time_s: float
    gpu_mib: float
    cpu_pct: float
    ram_mib: float


@dataclass(frozen=True)
class CaseEfficiency:
    """One CSV row. The summary row (case ``summary``) holds means of the measures, ``exit_code`` the number
    of runs that did not exit 0 and ``output_written`` the number of runs that wrote their output."""

    case: str
    exit_code: int
    output_written: int
    time_s: float
    gpu_mem_max_mib: float
    gpu_mem_area_mib_s: float
    cpu_max_pct: float
    cpu_area_pct_s: float
    ram_max_mib: float
    ram_area_mib_s: float
    ram_start_mib: float
    samples: int


@dataclass(frozen=True)
class CaseRun:
    """A timed case, the last lines its command printed (stdout and stderr), the GPU sampled (None: none)."""

    result: CaseEfficiency
    log_tail: str
    gpu_name: str | None


class ResourceSampler:
    """Context manager sampling GPU memory, CPU and RAM every ``interval_s`` in a background thread."""

    def __init__(self, interval_s: float = 0.1, gpu_index: int = 0) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self.gpu_index = gpu_index
        self.gpu_name: str | None = None
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)
        self._gpu_used: Callable[[], float] = lambda: 0.0
        self._nvml = None

    def __enter__(self) -> ResourceSampler:
        import psutil

        self._psutil = psutil
        self._open_gpu()
        psutil.cpu_percent(interval=None)  # first call only sets the reference point
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._nvml is not None:
            self._nvml.nvmlShutdown()

    def elapsed(self) -> float:
        """Seconds since the sampler started."""
        return time.perf_counter() - self._t0

    def _loop(self) -> None:
        due = 0.0
        while True:
            self.samples.append(Sample(self.elapsed(), self._gpu_used(), self._psutil.cpu_percent(interval=None),
                                       self._psutil.virtual_memory().used / MIB))
            due += self.interval_s
            if self._stop.wait(max(0.0, due - self.elapsed())):
                return

    def _open_gpu(self) -> None:
        """Use NVML when nvidia-ml-py and a driver are there; otherwise GPU memory reads 0."""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # no package, no driver or no GPU: measure 0 GPU memory
            return
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.gpu_index)
            name = pynvml.nvmlDeviceGetName(handle)
        except pynvml.NVMLError as e:
            pynvml.nvmlShutdown()
            raise ValueError(f"GPU index {self.gpu_index}: {e}") from e
        self._nvml = pynvml
        self.gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        self._gpu_used = lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used / MIB


def frequent_max(values: Sequence[float], min_fraction: float = 0.02) -> float:
    """Largest value (rounded to an integer) that occurs in more than ``min_fraction`` of ``values``; 0 if none."""
    counts = Counter(round(v) for v in values)
    frequent = [v for v, n in counts.items() if n > min_fraction * len(values)]
    return float(max(frequent)) if frequent else 0.0


def area(times: Sequence[float], values: Sequence[float], end: float) -> float:
    """Area under a step curve: each value held from its time to the next sample's (the last to ``end``)."""
    edges = list(times[1:]) + [max(end, times[-1])] if times else []
    return float(sum(v * (t1 - t0) for v, t0, t1 in zip(values, times, edges)))


def measures(case: str, exit_code: int, output_written: bool, time_s: float, samples: Sequence[Sample],
             end: float) -> CaseEfficiency:
    """Reduce one run's samples to a CSV row."""
    t = [s.time_s for s in samples]
    gpu, cpu, ram = ([getattr(s, f) for s in samples] for f in ("gpu_mib", "cpu_pct", "ram_mib"))
    return CaseEfficiency(
        case, exit_code, int(output_written), time_s,
        frequent_max(gpu), area(t, gpu, end),
        max(cpu, default=0.0), area(t, cpu, end),
        max(ram, default=0.0), area(t, ram, end), ram[0] if ram else 0.0,
        len(samples),
    )


def case_name(image: Path) -> str:
    """``<case>`` of ``<case>_0000.nii.gz`` (or of ``<case>.nii.gz``)."""
    name = image.name
    for suffix in (IMAGE_SUFFIX, ".nii.gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise ValueError(f"{image}: not a .nii.gz image")


def fill_command(template: str, inputs: Path, outputs: Path) -> str:
    """``template`` with ``{inputs}`` and ``{outputs}`` replaced by the shell-quoted folders."""
    missing = [key for key in ("{inputs}", "{outputs}") if key not in template]
    if missing:
        raise ValueError(f"command {template!r} lacks {' and '.join(missing)}")
    return template.replace("{inputs}", shlex.quote(str(inputs))).replace("{outputs}", shlex.quote(str(outputs)))


def run_case(template: str, image: Path, workdir: Path, keep_dir: Path | None = None, interval_s: float = 0.1,
             timeout_s: float | None = None, gpu_index: int = 0) -> CaseRun:
    """Run the command on ``image`` alone in fresh folders under ``workdir`` and measure it.

    ``keep_dir``: where the outputs and the command's log (``<case>.log``) are moved; otherwise deleted.
    A run past ``timeout_s`` has its process group killed and exit code 124.
    """
    case = case_name(image)
    root = Path(tempfile.mkdtemp(prefix=f"{case}-", dir=workdir))
    inputs, outputs = root / "inputs", root / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    outputs.chmod(0o777)  # a container may write as another user
    shutil.copy2(image, inputs / image.name)
    log_path = root / f"{case}.log"
    command = fill_command(template, inputs.resolve(), outputs.resolve())
    try:
        with log_path.open("wb") as log, ResourceSampler(interval_s, gpu_index) as sampler:
            start = time.perf_counter()
            proc = subprocess.Popen(command, shell=True, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                exit_code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                exit_code = TIMEOUT_EXIT_CODE
            except BaseException:  # interrupted: do not leave the command running
                _kill_group(proc)
                raise
            time_s = time.perf_counter() - start
            end = sampler.elapsed()
        written = (outputs / f"{case}.nii.gz").is_file() and (outputs / f"{case}.nii.gz").stat().st_size > 0
        result = measures(case, exit_code, written, time_s, sampler.samples, end)
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-5:])
        if keep_dir is not None:
            keep_dir.mkdir(parents=True, exist_ok=True)
            for item in [*outputs.iterdir(), log_path]:
                shutil.move(str(item), str(keep_dir / item.name))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return CaseRun(result, tail, sampler.gpu_name)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group this module started for ``proc`` and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_efficiency(template: str, inputs_dir: Path, workdir: Path | None = None, keep_dir: Path | None = None,
                   interval_s: float = 0.1, timeout_s: float | None = None, gpu_index: int = 0) -> Iterator[CaseRun]:
    """``run_case`` for every ``*.nii.gz`` of ``inputs_dir`` in name order, one at a time."""
    inputs_dir = Path(inputs_dir)
    if not inputs_dir.is_dir():
        raise ValueError(f"{inputs_dir}: not a directory")
    images = sorted(p for p in inputs_dir.iterdir() if p.name.endswith(".nii.gz") and p.is_file())
    if not images:
        raise ValueError(f"{inputs_dir}: no *.nii.gz images")
    fill_command(template, Path("in"), Path("out"))  # fail on a bad template before the first run
    with tempfile.TemporaryDirectory(prefix="abdoseg-efficiency-", dir=workdir) as tmp:
        for image in images:
            yield run_case(template, image, Path(tmp), keep_dir, interval_s, timeout_s, gpu_index)


def summary_row(results: Sequence[CaseEfficiency]) -> CaseEfficiency:
    """Means of the measures; ``exit_code``: runs not exiting 0; ``output_written``: outputs written."""
    if not results:
        raise ValueError("no results to summarise")
    n = len(results)

    def mean(field: str) -> float:
        return sum(getattr(r, field) for r in results) / n

    return CaseEfficiency(
        "summary", sum(r.exit_code != 0 for r in results), sum(r.output_written for r in results),
        mean("time_s"), mean("gpu_mem_max_mib"), mean("gpu_mem_area_mib_s"), mean("cpu_max_pct"),
        mean("cpu_area_pct_s"), mean("ram_max_mib"), mean("ram_area_mib_s"), mean("ram_start_mib"),
        round(mean("samples")),
    )
