"""Which device runs the model: `--device auto|cpu|cuda`, one place for every command.

A device is named by its torch string ('cpu', 'cuda', 'cuda:1'); torch is asked about CUDA only
where a GPU driver is present, so CPU inference on an exported runtime never imports torch.
"""

from __future__ import annotations

import os
import sys

from poser.errors import PoserError

DEVICES = ("auto", "cpu", "cuda")
_GPU_FILES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")     # NVIDIA, ROCm, WSL2's GPU driver


def resolve_device(name: str) -> str:
    """'auto': CUDA when available, else the CPU; 'cuda' without one is a one-line error."""
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    kind, _, index = str(name).partition(":")
    if kind not in DEVICES[1:] or (index and (kind == "cpu" or not index.isdigit())):
        raise PoserError(f"unknown device {name!r} (one of {', '.join(DEVICES)})")
    if kind == "cuda" and not cuda_available():
        raise PoserError(f"`device` {name}: no CUDA device is available here (use `device` cpu)")
    return str(name)


def cuda_available() -> bool:
    """torch.cuda.is_available(), without importing torch (1.4 s) on a Linux machine with no GPU driver."""
    if sys.platform.startswith("linux") and "torch" not in sys.modules and not any(map(os.path.exists, _GPU_FILES)):
        return False
    import torch

    return torch.cuda.is_available()


def device_type(device) -> str:
    """'cpu' or 'cuda' of a device string or torch.device."""
    return getattr(device, "type", None) or str(device).partition(":")[0]
