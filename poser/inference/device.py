"""Which torch device runs the model: `--device auto|cpu|cuda`, one place for every command."""

from __future__ import annotations

import torch

from poser.errors import PoserError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """'auto': CUDA when available, else the CPU; 'cuda' without one is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise PoserError(f"unknown device {name!r} (one of {', '.join(DEVICES)})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PoserError(f"--device {name}: no CUDA device is available here (use --device cpu)")
    return dev
