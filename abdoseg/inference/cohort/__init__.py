"""Cohort inference on Ray: many scans, a pool of workers that each load the model once and segment many.

    python -m abdoseg cohort --input DIR|MANIFEST.csv --output DIR [--address local|auto|HOST:PORT]
                               [--workers N] [--threads-per-worker T] [--card ...] [--retries R]

Modules: `cases` (the case list, and which cases already have a valid output), `worker` (one Predictor per
worker), `runner` (Ray: the actor pool, replacement of dead workers, retries), `results` (results.csv),
`cli` (the command). Ray is imported only by `runner`, so the runtime image never needs it.
"""
from abdoseg.inference.cohort.cli import main

__all__ = ["main"]
