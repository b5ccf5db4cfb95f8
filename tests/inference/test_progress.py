"""The progress bar: only on a terminal with more than one case; the per-case lines pass through unchanged."""
import io
import sys

from abdoseg.inference.process.progress import progress


class FakeTerminal(io.StringIO):
    def __init__(self):
        super().__init__()
        self.writes = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_no_bar_without_a_terminal_or_with_one_case():
    stream = io.StringIO()
    assert list(progress([1, 2, 3], stream)) == [1, 2, 3]
    tty = FakeTerminal()
    assert list(progress(["only"], tty)) == ["only"]
    assert stream.getvalue() == "" and tty.getvalue() == ""


def test_bar_on_a_terminal_keeps_the_case_lines_whole():
    tty, saved = FakeTerminal(), sys.stderr
    seen = []
    for case in progress(["a", "b", "c"], tty):
        print(f"{case}: 10x10x10 | read 0.01 | total 0.01 s", file=sys.stderr)
        seen.append(case)
    assert seen == ["a", "b", "c"] and sys.stderr is saved  # restored afterwards
    text = tty.getvalue()
    assert "3/3" in text or "2/3" in text  # the bar was drawn
    for case in "abc":  # each line reaches the terminal whole, in one write (the bar is redrawn after it)
        assert f"{case}: 10x10x10 | read 0.01 | total 0.01 s\n" in tty.writes
