"""The files a container build copies: the repository filtered by .dockerignore, with Docker's own rules.

As moby's patternmatcher (which docker and podman/buildah use): patterns in order, the last one that matches a path
decides (`!` re-includes); a pattern matches a path or any of its parent folders; `*` and `?` stay within one path
element and `**` spans any number of them. A folder is walked only when it is included or an exception pattern
reaches inside it (so the multi-GB venvs are never listed).
"""
from __future__ import annotations

import os
import re
from pathlib import Path


def _regex(pattern: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif ch == "*":
            out, i = out + "[^/]*", i + 1
        elif ch == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(ch), i + 1
    return re.compile(f"^{out}$")


def read_rules(dockerignore: Path) -> list[tuple[re.Pattern, bool, str]]:
    """(regex, is_exception, cleaned pattern) per line of a .dockerignore."""
    rules = []
    for line in dockerignore.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((_regex(pattern), exception, pattern))
    return rules


def excluded(path: str, rules: list[tuple[re.Pattern, bool, str]]) -> bool:
    """Whether the context leaves out `path` (relative, '/'-separated)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for regex, exception, _ in rules:
        if any(regex.match(p) for p in prefixes):
            result = not exception
    return result


def context_files(root: Path) -> list[str]:
    """Every file of the build context of `root` (relative paths, sorted)."""
    rules = read_rules(root / ".dockerignore")
    reaching = [pattern for _, exception, pattern in rules if exception]
    files = []
    for folder, dirs, names in os.walk(root):
        rel = os.path.relpath(folder, root)
        rel = "" if rel == "." else rel + "/"
        dirs[:] = [d for d in dirs if not excluded(rel + d, rules)
                   or any(p.startswith(rel + d + "/") for p in reaching)]
        files += [rel + n for n in names if not excluded(rel + n, rules)]
    return sorted(files)
