"""results.csv: one row per case as it finishes (case, status, seconds, worker, error), appended across runs."""
from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ("case", "status", "seconds", "worker", "error")


class ResultsTable:
    """Appends rows to a CSV (header written once), flushed row by row so a killed run keeps what finished."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            self._writer.writeheader()
            self._file.flush()

    def append(self, row: dict) -> None:
        self._writer.writerow({k: row.get(k, "") for k in COLUMNS})
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ResultsTable":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_results(path: Path) -> list[dict]:
    """All rows of a results.csv (for reports and tests)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
