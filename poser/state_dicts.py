"""Foreign state dicts (ImageNet backbones, detectors, anything not a poser weights file), read
safely on the ground floor: every room that starts a network from one reads it here."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from poser.errors import PoserError

if TYPE_CHECKING:
    import torch


def read_state_dict(path: Path, option: str) -> dict[str, torch.Tensor]:
    """A foreign state dict (ImageNet backbones, detectors): .safetensors, or a .pth / .pt read
    tensors-only (`weights_only`): pickled Python objects are never loaded. `option` names the
    flag in errors."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise PoserError(f"{option} {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:      # torch's own advice for this is to unpickle the file: never
        why = "it holds pickled Python objects, which poser never loads" if "Weights only load failed" in str(e) \
            else (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise PoserError(f"{option} {path}: not a readable state dict ({why})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PoserError(f"{option} {path}: not a readable state dict (no tensors by name)")
    return state
