"""Training state (optimiser, scheduler, scaler, RNG) in safetensors, never pickle: nested
containers are flattened into named tensors and a JSON outline."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from poser.errors import PoserError
from poser.models.weights import write_safetensors

STATE_FORMAT = "poser-state/1"


def _flatten(obj, tensors: dict, prefix: str):
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}:{prefix}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _flatten(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix}")


def _unflatten(obj, tensors: dict):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(path: Path, state: dict) -> None:
    """Store a nested dict of tensors, numbers, strings, lists and tuples (dict keys may be
    ints, as in optimiser state) as safetensors, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    outline = _flatten(state, tensors, "s")
    write_safetensors(path, tensors, {"format": STATE_FORMAT, "outline": json.dumps(outline)})


def load_state(path: Path) -> dict:
    path = Path(path)
    outline = _outline(path)
    try:
        return _unflatten(outline, load_file(str(path)))
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise PoserError(f"{path}: unreadable training state ({e})") from None


def _outline(path: Path):
    """A state file's outline (its structure, tensors by name) from the metadata alone."""
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
        if md.get("format") != STATE_FORMAT:
            raise PoserError(f"{path} is not a poser training state")
        return json.loads(md["outline"])
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise PoserError(f"{path}: unreadable training state ({e})") from None


def state_epochs(path: Path) -> int:
    """The epochs a saved training state holds, from its metadata alone (no tensors read)."""
    try:
        return int(dict(_outline(path)["__dict__"])["epoch"])
    except (KeyError, TypeError, ValueError) as e:
        raise PoserError(f"{path}: unreadable training state ({e})") from None
