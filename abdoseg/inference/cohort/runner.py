"""Ray: join or start a cluster, run a pool of `SegmentWorker` actors over the cases, stream results back.

Each worker is a Ray actor holding one Predictor (loaded once, in its constructor) and `threads` CPUs of the
cluster. A worker gets one case at a time, so the driver always knows which case a worker was on when its
process died (killed, out of memory, node lost): Ray reports the death on that case's result, the driver starts
a fresh worker in its place and queues the case again, up to `retries` times per case (then it is a failed
row). Ray's own actor restart is not used: calls sent while it restarts fail without running, which would spend
the retries of cases that never ran. A scan that cannot be segmented is never retried: the worker returns its
failed row instead of raising.
"""
from __future__ import annotations

import logging
import re
import sys
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from abdoseg.inference.cohort.cases import CohortCase
from abdoseg.inference.cohort.worker import SegmentWorker
from abdoseg.inference.process.resources import usable_cpus

LOCAL_OBJECT_STORE_BYTES = 128 * 2**20  # only small result rows travel through it


@dataclass(frozen=True)
class PoolConfig:
    """What every worker loads, and how many of them run."""

    card: str
    model: str | None
    runtime: str
    threads: int  # per worker (its Ray num_cpus, and the runtime's threads)
    workers: int | None  # None: as many as the cluster's CPUs allow
    retries: int  # retries of a case whose worker died


def connect(address: str, cpus_wanted: int) -> bool:
    """Join Ray: `local` starts a private single-node instance (at least `cpus_wanted` CPUs, dashboard off);
    `auto` or HOST:PORT joins a running cluster (`ray start`, KubeRay), shipping this `abdoseg` package to its
    workers. An already initialised Ray in this process is used as it is. Returns True when this call initialised Ray
    (the caller then shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if address == "local":
        ray.init(address="local", num_cpus=max(usable_cpus(), cpus_wanted), include_dashboard=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, logging_level=logging.WARNING)
    else:  # the workers get this process's `abdoseg` package (Ray uploads it), whatever the nodes have installed
        package = str(Path(__file__).resolve().parents[2])
        ray.init(address=address, runtime_env={"py_modules": [package]}, logging_level=logging.WARNING)
    return True


def default_workers(threads: int) -> int:
    """As many workers of `threads` CPUs as the cluster holds (at least one)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)


class WorkerStartError(RuntimeError):
    """A worker could not start (its Predictor did not load): no case can run, the command stops."""


def _last_line(error: Exception) -> str:
    """The informative line of a Ray error (its last line: the cause), without terminal colours."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(error).__name__)[:200]


def _failed(case: CohortCase, error: str) -> dict:
    return {"case": case.name, "status": "failed", "seconds": "", "worker": "", "error": f"{case.image}: {error}"}


class _Pool:
    """`n` worker actors, one case in flight on each; a dead worker is replaced and its case queued again."""

    def __init__(self, cfg: PoolConfig, n: int, cases: list[CohortCase]) -> None:
        import ray

        self.cfg = cfg
        self.actor_class = ray.remote(num_cpus=cfg.threads, max_restarts=0, max_task_retries=0)(SegmentWorker)
        self.queue, self.running, self.deaths = deque(cases), {}, Counter()
        for _ in range(n):
            self.submit(self.new_worker())

    def new_worker(self):
        return self.actor_class.remote(self.cfg.card, self.cfg.model, self.cfg.runtime, self.cfg.threads)

    def submit(self, worker) -> None:
        if self.queue:
            case = self.queue.popleft()
            self.running[worker.run.remote(case.name, str(case.image), str(case.output))] = (worker, case)
        else:
            import ray

            ray.kill(worker)

    def next_row(self) -> dict | None:
        """Wait for a case to finish; its row, or None when its worker died and the case was queued again."""
        import ray
        from ray.exceptions import OutOfMemoryError, RayActorError, RayTaskError

        [ref], _ = ray.wait(list(self.running), num_returns=1)
        worker, case = self.running.pop(ref)
        try:
            row = ray.get(ref)
        except (RayActorError, OutOfMemoryError) as e:  # the worker process died (killed, OOM) or did not start
            if getattr(e, "actor_init_failed", False):
                raise WorkerStartError(f"a worker could not load the model: {_last_line(e)}") from None
            ray.kill(worker, no_restart=True)
            worker = self.new_worker()
            self.deaths[case.name] += 1
            if self.deaths[case.name] > self.cfg.retries:
                row = _failed(case, f"worker died on this case {self.deaths[case.name]} time(s), not retried "
                              f"further ({_last_line(e)})")
            else:
                row = None
                self.queue.appendleft(case)
                print(f"{case.name}: worker died ({_last_line(e)}); retry {self.deaths[case.name]} of "
                      f"{self.cfg.retries} on a new worker", file=sys.stderr)
        except RayTaskError as e:  # an unexpected exception inside the worker: report it, do not retry
            row = _failed(case, _last_line(e))
        self.submit(worker)
        return row

    def close(self) -> None:
        """Stop the workers still running (after an error; a finished pool has stopped them all)."""
        import ray

        for worker, _ in self.running.values():
            ray.kill(worker)
        self.running.clear()


def run_pool(cases: list[CohortCase], cfg: PoolConfig, on_row: Callable[[dict], None]) -> int:
    """Segment `cases` on a pool of workers (Ray must be initialised); `on_row` gets each row as its case
    finishes. Returns the number of workers used."""
    n_workers = min(cfg.workers or default_workers(cfg.threads), len(cases))
    pool = _Pool(cfg, n_workers, cases)
    try:
        while pool.running:
            row = pool.next_row()
            if row is not None:
                on_row(row)
    finally:
        pool.close()
    return n_workers
