"""Weights and training state in safetensors: tensors plus JSON metadata, never pickle.

A weights file is self-describing: its metadata names the skeleton, backbone, input size,
normalisation, stage and poser version, so eval and annotate rebuild the model from the file
alone. Training state (optimiser, scheduler, scaler, RNG) is stored the same way: nested
containers are flattened into named tensors and a JSON outline.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from poser import __version__
from poser.errors import PoserError
from poser.files import atomic_path

FORMAT = "poser-weights/1"
STATE_FORMAT = "poser-state/1"


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], meta: dict, half: bool = False) -> None:
    """Write model weights with `meta` (JSON-able) into `path`, atomically."""
    tensors = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).contiguous().cpu()
               for k, v in state_dict.items()}
    md = {"format": FORMAT, "poser_version": __version__, "meta": json.dumps(meta)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=md)


def save_bundle(path: Path, stages: list[tuple[dict[str, torch.Tensor], dict]], half: bool = False) -> None:
    """A cascade in one file: stage s's tensors prefixed 'stage{s}.', metadata listing every
    stage's, plus stage one's skeleton, joints and input size at the top for quick reading."""
    if len(stages) == 1:
        return save_weights(path, stages[0][0], stages[0][1], half)
    tensors = {f"stage{s}.{k}": v.detach().clone() for s, (sd, _) in enumerate(stages, start=1) for k, v in sd.items()}
    first = stages[0][1]
    meta = {k: first[k] for k in ("skeleton", "joints", "input_size", "margin", "mean", "std") if k in first}
    save_weights(path, tensors, meta | {"stage": len(stages), "stages": [m for _, m in stages]}, half)


def read_meta(path: Path) -> dict:
    """The metadata of a poser weights file; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise PoserError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise PoserError(f"{path} is not a safetensors file ({e})") from None
    if md.get("format") != FORMAT:
        raise PoserError(f"{path} is a safetensors file but not poser weights (no '{FORMAT}' metadata)")
    return json.loads(md["meta"])


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    meta = read_meta(path)
    state = load_file(str(path))
    return {k: (v.float() if v.dtype == torch.float16 else v) for k, v in state.items()}, meta


# --- training state: nested containers <-> named tensors + JSON outline -----------------

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
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": STATE_FORMAT, "outline": json.dumps(outline)})


def load_state(path: Path) -> dict:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
        if md.get("format") != STATE_FORMAT:
            raise PoserError(f"{path} is not a poser training state")
        return _unflatten(json.loads(md["outline"]), load_file(str(path)))
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise PoserError(f"{path}: unreadable training state ({e})") from None
