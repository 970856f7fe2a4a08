"""The on-disk cache of exports of poser weights files (`POSER_CACHE`, default ~/.cache/poser):
each weights file's ONNX graphs under a key of its hash, a digest beside each graph (a file not
byte for byte what poser wrote is exported again), and the parity records: how far each runtime's
outputs are from torch's on the same crops, measured once."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from poser.files import cache_root, write_bytes, write_json
from poser.runtime.exported import export_onnx
from poser.spec import ModelSpec, StageSpec
from poser.version import __version__

if TYPE_CHECKING:
    import torch


def weights_key(path: Path) -> str:
    """The cache key of a weights file: its sha256 (read once per file version) and poser's version."""
    st = Path(path).stat()
    return _weights_key(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _weights_key(path: str, size: int, mtime: int) -> str:
    return f"{_digest(Path(path))[:20]}-{__version__}"


def cached_onnx_paths(weights: Path, n: int) -> list[Path]:
    """Where the ONNX graphs of a weights file's first n stages are cached."""
    folder = cache_root() / "onnx" / weights_key(weights)
    return [folder / f"stage{s}.onnx" for s in range(1, n + 1)]


def cached_onnx(weights: Path, stages: list[tuple[torch.nn.Module, StageSpec]]) -> list[Path]:
    """The ONNX graphs of a weights file's stages, exported once into the cache; a cached file
    that is not the one poser wrote there (truncated, replaced) is exported again."""
    paths = cached_onnx_paths(weights, len(stages))
    for (model, spec), p in zip(stages, paths, strict=True):
        if not cached_intact(p):
            export_onnx(model, spec, p)
            _record_digest(p)
    return paths


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _record_digest(path: Path) -> None:
    write_bytes(_digest_file(path), _digest(path).encode())


def cached_intact(path: Path) -> bool:
    """Whether a cached export is byte for byte what poser wrote (its digest beside it)."""
    try:
        return _digest_file(path).read_text().strip() == _digest(path)
    except OSError:
        return False


def parity(reference: list, candidate: list, specs: ModelSpec, seed: int = 0, typical: bool = False) -> float:
    """Max |coords difference| (normalised crop coordinates) between two runtimes' networks on
    the same crops, over every stage. The raw `coords` output (the fc head's regression, the
    integral head's whole-map expectation) is continuous in the input, so the difference
    measures the runtime, not the instability of a flat heatmap's arg-max. `typical`: the
    median joint's difference instead of the worst: int8 moves an unsure joint's whole-map
    expectation far (a flat map's tail) while the rest stay close, so the worst joint says
    little about an int8 model."""
    worst = 0.0
    rng = np.random.default_rng(seed)
    for ref, cand, spec in zip(reference, candidate, specs.stages, strict=True):
        x = rng.standard_normal((4, 3, spec.input_size, spec.input_size), dtype=np.float32)
        diff = np.abs(ref(x)["coords"] - cand(x)["coords"]).max(-1)
        worst = max(worst, float(np.median(diff) if typical else diff.max()))
    return worst


def parity_record(weights: Path) -> Path:
    return cache_root() / "onnx" / weights_key(weights) / "parity.json"


def _parity_entry(runtime: str, precision: str, stages: int) -> str:
    return f"{runtime}/{precision}/{stages}"        # measured over the first `stages` networks


def _parity_records(weights: Path) -> dict:
    """The parity records of a weights file; unreadable or not an object (a corrupt file): none,
    so they are measured again."""
    try:
        data = json.loads(parity_record(weights).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def remember_parity(weights: Path, runtime: str, precision: str, stages: int, diff: float) -> None:
    path = parity_record(weights)
    data = _parity_records(weights)
    # A non-finite difference (a NaN output) is recorded as a mismatch: strict JSON would write
    # it as null, which reads back as "not measured" and would have it measured forever.
    data[_parity_entry(runtime, precision, stages)] = diff if np.isfinite(diff) else 1e30
    write_json(path, data)


def known_parity(weights: Path, runtime: str, precision: str, stages: int) -> float | None:
    diff = _parity_records(weights).get(_parity_entry(runtime, precision, stages))
    return float(diff) if isinstance(diff, int | float) else None
