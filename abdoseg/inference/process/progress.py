"""A progress bar over cases (tqdm) when stderr is a terminal and there is more than one case.

The per-case lines stay byte for byte what they are: while the bar is shown, writes to sys.stderr go through
tqdm's external-write mode (bar cleared, line written, bar redrawn below it). No terminal, one case, or no tqdm:
the cases are returned as they are and nothing else is printed.
"""
from __future__ import annotations

import sys
from typing import Iterator, Sequence, TextIO, TypeVar

T = TypeVar("T")


class _AroundBar:
    """A text stream that writes whole lines above the progress bar (print() writes the text and the newline in
    two calls: written one by one, the redrawn bar would overwrite the text)."""

    def __init__(self, stream: TextIO, bar_class) -> None:
        self._stream, self._bar_class, self._pending = stream, bar_class, ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            lines, self._pending = self._pending.rsplit("\n", 1)
            with self._bar_class.external_write_mode(file=self._stream):
                self._stream.write(lines + "\n")
                self._stream.flush()
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.write("\n")
        self._stream.flush()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def progress(items: Sequence[T], stream: TextIO | None = None) -> Iterator[T]:
    """Yield `items`, advancing a bar on `stream` (default sys.stderr) after each one's loop body."""
    stream = stream or sys.stderr
    try:
        is_tty = stream.isatty()
    except (AttributeError, ValueError):
        is_tty = False
    if len(items) < 2 or not is_tty:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield from items
        return
    bar = tqdm(total=len(items), unit="case", file=stream, dynamic_ncols=True, leave=False)
    saved, sys.stderr = sys.stderr, _AroundBar(stream, tqdm)
    try:
        for item in items:
            yield item
            bar.update()
    finally:
        sys.stderr.flush()
        sys.stderr = saved
        bar.close()
