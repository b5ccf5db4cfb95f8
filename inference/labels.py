"""FLARE21 label map (no heavy imports)."""
from __future__ import annotations

FLARE21_LABELS: dict[int, str] = {0: "background", 1: "liver", 2: "kidneys", 3: "spleen", 4: "pancreas"}

#: Connected components kept per label by the cleanup stage (kidneys: left and right).
KEEP_COMPONENTS: dict[int, int] = {1: 1, 2: 2, 3: 1, 4: 1}
