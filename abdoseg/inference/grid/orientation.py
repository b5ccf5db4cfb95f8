"""Reorientation to a canonical array orientation and back, as a pair of pure index operations.

Orientation codes name, for the image axes in ITK order (x, y, z), the direction toward which each index
increases, in patient terms: L/R, P/A, S/I. ITK's identity direction is "LPS"; the FLARE21 training scans
(direction diag(-1,-1,1)) are "RAS". A scan is brought to the canonical code by permuting and flipping its
array axes only — no resampling — so the inverse is exact and every output keeps the input's grid.
Oblique directions map to the closest code (largest direction cosines), as SimpleITK's DICOMOrient does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_AXIS_OF = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}


def parse_orientation(code: str) -> tuple[tuple[int, int], ...]:
    """'RAS' -> ((0,-1),(1,-1),(2,1)): per image axis, the physical (LPS) axis and the sign of its cosine."""
    if not isinstance(code, str) or len(code) != 3 or any(c not in _AXIS_OF for c in code.upper()):
        raise ValueError(f"orientation code must be three of L/R, P/A, S/I, got {code!r}")
    parsed = tuple(_AXIS_OF[c] for c in code.upper())
    if sorted(p for p, _ in parsed) != [0, 1, 2]:
        raise ValueError(f"orientation code {code!r} names a patient axis twice")
    return parsed


def orientation_of(direction: tuple[float, ...] | np.ndarray) -> str:
    """The closest orientation code of a 3x3 direction matrix (SimpleITK's row-major 9-tuple)."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(d)) or abs(np.linalg.det(d)) < 1e-6:
        raise ValueError(f"direction matrix is singular or not finite: {tuple(np.round(d.ravel(), 4))}")
    taken = np.zeros((3, 3), bool)
    code = [""] * 3
    a = np.abs(d)
    for _ in range(3):  # greedy on the largest remaining cosine: a valid permutation even for 45° obliques
        p, k = np.unravel_index(np.argmax(np.where(taken, -1, a)), a.shape)
        code[k] = "LPS"[p] if d[p, k] > 0 else "RAI"[p]
        taken[p, :] = True
        taken[:, k] = True
    return "".join(code)


@dataclass(frozen=True)
class Reorientation:
    """Array-level map from a scan's stored (z, y, x) array to the canonical (z, y, x) array.

    canonical = stored.transpose(perm)[flips]; `perm` and `flip` act on numpy axes.
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    @classmethod
    def between(cls, source: str, target: str) -> "Reorientation":
        src, tgt = parse_orientation(source), parse_orientation(target)
        perm, flip = [], []
        for m in (2, 1, 0):  # numpy axis b = 2 - m holds image axis m
            p, sign = tgt[m]
            k = next(k for k, (q, _) in enumerate(src) if q == p)
            perm.append(2 - k)
            flip.append(src[k][1] != sign)
        return cls(tuple(perm), tuple(flip))  # type: ignore[arg-type]

    @property
    def is_identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flip)

    def _flips(self) -> tuple[slice, ...]:
        return tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)

    def apply(self, stored: np.ndarray) -> np.ndarray:
        """Stored array -> canonical array (a view; no copy)."""
        return stored.transpose(self.perm)[self._flips()]

    def invert(self, canonical: np.ndarray) -> np.ndarray:
        """Canonical array -> stored array (a view; no copy)."""
        return canonical[self._flips()].transpose(np.argsort(self.perm))

    def shape(self, stored_zyx: tuple[int, int, int]) -> tuple[int, int, int]:
        """Shape of the canonical array, from the stored array's (z, y, x) shape."""
        return tuple(int(stored_zyx[a]) for a in self.perm)  # type: ignore[return-value]

    def spacing(self, stored_zyx: tuple[float, float, float]) -> tuple[float, float, float]:
        """Spacing of the canonical array axes, from the stored array's (z, y, x) spacing."""
        return tuple(float(stored_zyx[a]) for a in self.perm)  # type: ignore[return-value]
