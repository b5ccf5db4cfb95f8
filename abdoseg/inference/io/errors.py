"""The errors a case can end with, and how a file and its reason are shown on one line.

Every refusal is an InputError (a scan that cannot be segmented) or an OutputError (a label map that could not be
written), whose one-line message names the file (control characters and undecodable bytes escaped) and the reason.
"""
from __future__ import annotations

import re
from pathlib import Path


class InputError(ValueError):
    """A scan that cannot be segmented; the message names the file and the reason in one line."""


class OutputError(OSError):
    """A label map that could not be written completely; the message names the file and the reason."""


def shown(path: Path | str) -> str:
    """`path` as one printable line: control characters as \\n, \\t, \\x1b..., undecodable name bytes as \\xff."""
    out = []
    for ch in str(path):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape of a byte that is not UTF-8
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or 0x7F <= code < 0xA0 or ch in "\u2028\u2029":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def failure_reason(error: BaseException, path: Path) -> str:
    """One line naming the file and the reason for any exception a case raised."""
    if isinstance(error, MemoryError):
        return f"{shown(path)}: not enough memory to segment this scan"
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.search(r"(^Exception from |^Check '.*' failed at |:\d+:?$)", ln)]
    reason = lines[0] if lines else type(error).__name__
    if isinstance(error, (InputError, OutputError)) and reason.startswith(shown(path)):
        return reason
    kind = "" if isinstance(error, (InputError, OSError, ValueError)) else f"{type(error).__name__}: "
    return f"{shown(path)}: {kind}{reason}"
