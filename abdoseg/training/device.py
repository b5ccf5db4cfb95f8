"""The training device: `--device cpu | cuda | auto`, resolved once, before any work, to what torch can run."""
from __future__ import annotations

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(requested: str) -> str:
    """'cpu' or 'cuda' for a requested device: 'auto' is 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' without
    one is refused (a ValueError naming the reason) rather than failing inside the first step."""
    import torch

    if requested not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device cuda: torch {torch.__version__} sees no GPU (torch.cuda.is_available() is False); "
                         "use --device cpu or auto")
    return requested
