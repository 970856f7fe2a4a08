"""Which runtime runs a model, decided once: `load_networks` turns a weights file (or an exported
one) into each stage's network and says what runs it. The Predictor asks here, and only here.

`auto` keeps torch on CUDA and, on the CPU, takes the fastest installed runtime whose outputs
match torch's on the same crops (`cache.parity`, measured once and remembered in the cache),
else torch. Where the records already decide and the export is cached, torch is never
imported. int8 runs only when asked for: an OpenVINO model quantized from these weights, beside
them (`<stem>.int8.xml`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from poser.device import device_type
from poser.errors import PoserError
from poser.models.weights import read_spec
from poser.runtime import cache
from poser.runtime.exported import exported_spec, exported_stages, is_exported
from poser.runtime.networks import (
    INT8_PARITY,
    PRECISIONS,
    RUNTIMES,
    SOURCE_KEY,
    auto_candidates,
    build,
    choose,
    installed,
    ov_core,
    tolerance,
    torch_networks,
)
from poser.spec import ModelSpec


@dataclass
class Loaded:
    """A model ready to run: its spec, each stage's network, and the torch models behind them
    (None: not loaded, `weights` can load them; [None] * S: an exported model has none)."""
    spec: ModelSpec
    networks: list
    models: list | None
    device: object
    weights: Path | None


def load_networks(path: Path, device="cpu", stages: int | None = None, runtime: str | None = None,
                  precision: str = "auto") -> Loaded:
    """The networks of `path` (a poser weights file, or an .onnx / OpenVINO .xml `poser export`
    wrote), its first `stages` stages, on `runtime` (None: torch for a weights file, 'auto' for
    an exported one) at `precision`."""
    path = Path(path)
    if precision not in PRECISIONS:
        raise PoserError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
    if runtime is not None and runtime not in RUNTIMES:
        raise PoserError(f"unknown runtime {runtime!r} (one of {', '.join(RUNTIMES)})")
    if is_exported(path):
        return _exported(path, stages, runtime or "auto", precision)
    runtime = runtime or "torch"
    if runtime != "torch" and precision != "int8" and (cached := _cached(path, device, stages, runtime, precision)):
        return cached
    import torch

    from poser.models.deeppose import load_stages

    loaded = load_stages(path, device, stages)
    spec = ModelSpec(tuple(s for _, s in loaded))
    models, nets = torch_networks([m for m, _ in loaded], device)
    if runtime != "torch":
        nets = _int8(path, device, runtime, spec, nets) if precision == "int8" else \
            _measured(path, device, runtime, precision, spec, models, nets)
    return Loaded(spec, nets, models, torch.device(device), path)


def _cached(path: Path, device, stages: int | None, runtime: str, precision: str) -> Loaded | None:
    """Straight from the cache, torch not loaded, where the parity records already decide and
    the export is cached intact (None where they do not, or where the choice is torch)."""
    spec = read_spec(path)
    if stages is not None and stages > len(spec):
        return None                     # load_stages says so, naming the file
    spec = spec.take(stages)
    name, prec, decided = _recorded(path, device, len(spec), runtime, precision)
    onnx = cache.cached_onnx_paths(path, len(spec))
    if name == "torch" or not decided or not all(cache.cached_intact(p) for p in onnx):
        return None
    return Loaded(spec, [build(name, p, prec) for p in onnx], None, device_type(device), path)


def _exported(path: Path, stages: int | None, runtime: str, precision: str) -> Loaded:
    spec = exported_spec(path)
    if stages is not None and stages > len(spec):
        raise PoserError(f"stages={stages}: {path} holds a {len(spec)}-stage model")
    spec = spec.take(stages)
    name = choose(runtime, "cpu", exported=path.suffix)
    nets = [build(name, p, precision) for p in exported_stages(path)[:len(spec)]]
    return Loaded(spec, nets, [None] * len(spec), "cpu", None)


def _measured(weights: Path, device, runtime: str, precision: str, spec: ModelSpec, models: list,
              torch_nets: list) -> list:
    """The networks the records choose, measuring each candidate they do not know yet."""
    n, built = len(spec), {}
    while True:
        name, prec, decided = _recorded(weights, device, n, runtime, precision)
        if name == "torch":
            return torch_nets
        if (name, prec) not in built:
            onnx = cache.cached_onnx(weights, list(zip(models, spec.stages, strict=True)))
            built[name, prec] = [build(name, p, prec) for p in onnx]
        if decided:
            return built[name, prec]
        cache.remember_parity(weights, name, prec, n, cache.parity(torch_nets, built[name, prec], spec))


def _recorded(weights: Path, device, stages: int, runtime: str, precision: str) -> tuple[str, str, bool]:
    """What the choice is, as far as the parity records tell: (runtime, precision, True) when
    decided; (runtime, precision, False) for the first candidate not measured yet. Candidates
    are the one asked for, or what 'auto' tries in order: the first within its tolerance, torch
    last."""
    candidates = [(choose(runtime, device), precision)] if runtime != "auto" else auto_candidates(device, precision)
    for name, prec in candidates:
        if name == "torch":
            return name, prec, True
        known = cache.known_parity(weights, name, prec, stages)
        if known is None:
            return name, prec, False
        if runtime != "auto" or known <= tolerance(prec):
            return name, prec, True
    return "torch", "fp32", True


def _int8(weights: Path, device, runtime: str, spec: ModelSpec, torch_nets: list) -> list:
    """The int8 model quantized from these weights. Only when asked for: 'auto' stays fp32, since
    the shipped model's int8 versions lost 0.005-0.012 PCP from the whole photo (docs)."""
    if device_type(device) != "cpu" or runtime not in ("auto", "openvino"):
        raise PoserError("precision int8 runs on openvino on the CPU (runtime auto or openvino, device cpu)")
    sibling = int8_sibling(weights)
    if sibling is None:
        raise PoserError(f"precision int8: no int8 model quantized from {weights} beside it (make one: "
                         f"poser export {weights} {Path(weights).with_suffix('.int8.xml')} --format "
                         "openvino --int8 --calibration DATA)")
    nets = [build("openvino", p, "int8") for p in exported_stages(sibling)[: len(spec)]]
    if len(nets) < len(spec):
        raise PoserError(f"precision int8: {sibling} holds {len(nets)} stage(s), the model {len(spec)}")
    diff = cache.parity(torch_nets, nets, spec, typical=True)
    if diff > INT8_PARITY:
        raise PoserError(f"precision int8: {sibling} differs from its weights by {diff:.3f} (median joint, over "
                         f"{INT8_PARITY}); re-export it")
    return nets


def int8_sibling(weights: Path) -> Path | None:
    """`<weights stem>.int8.xml` beside a weights file, if it was quantized from these weights."""
    path = Path(weights).with_name(f"{Path(weights).stem}.int8.xml")
    if not path.is_file() or not installed("openvino"):
        return None
    try:
        model = ov_core().read_model(str(path))
        ok = model.has_rt_info(SOURCE_KEY) and model.get_rt_info(SOURCE_KEY).astype(str) == cache.weights_key(weights)
    except Exception:       # an unreadable sibling is not used; the weights file still runs
        return None
    return path if ok else None
