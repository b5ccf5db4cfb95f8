"""One cohort worker: loads the Predictor once, then segments case after case (`SegmentWorker.run`).

A plain class: `abdoseg.inference.cohort.runner` makes it a Ray actor. A scan that cannot be segmented is a failed row
with its one-line reason (returned, not raised, so Ray never retries it); only the death of the worker process
itself (killed, out of memory) makes Ray restart the worker and retry the case.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from abdoseg.inference.io.errors import InputError


class SegmentWorker:
    """Holds one `abdoseg.inference.pipeline.Predictor` (CPU) for its whole life."""

    def __init__(self, card: str, model: str | None, runtime: str, threads: int) -> None:
        from abdoseg.inference.pipeline import Predictor

        self.predictor = Predictor.load(card, None if model is None else Path(model), runtime, threads, "cpu")
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, case: str, image: str, output: str) -> dict:
        """Segment `image` into `output` (written atomically); a results row: case, status, seconds, worker, error."""
        t0 = time.perf_counter()
        try:
            self.predictor.predict_file(Path(image), Path(output))
            status, error = "ok", ""
        except (InputError, MemoryError, RuntimeError, ValueError, OSError) as e:
            status, error = "failed", (str(e).splitlines() or [type(e).__name__])[0]
        return {"case": case, "status": status, "seconds": round(time.perf_counter() - t0, 3), "worker": self.name,
                "error": error}
