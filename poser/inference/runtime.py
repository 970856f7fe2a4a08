"""Runtimes: what runs a network's forward. The decode, crops and cascade stay the Predictor's;
a runtime only turns a normalised batch (N, 3, S, S) into the head's raw outputs, or (`pixels`)
a batch of uint8 RGB crops (N, S, S, 3) as OpenCV cuts them from photos: OpenVINO converts and
normalises those inside its compiled graph (measured: a quarter of a batch's time on the CPU
was torch's conversion of the crops and the copy into the runtime, README); for the others the
Predictor converts them (`codec.pixels_to_input`).

Every network takes a normalised float32 batch, numpy or torch, and returns its raw outputs as
numpy arrays, which the codec decodes (`codec.decode_outputs`): a model that runs on OpenVINO
or ONNX Runtime never imports torch once its export is cached.

- `torch`: eager PyTorch (CUDA, or the CPU in fp32 with channels_last).
- `onnxruntime`: the network exported to ONNX, on ONNX Runtime's CPU provider.
- `openvino`: the same ONNX graph compiled by OpenVINO for this CPU: bf16 where the CPU has
  it natively (AMX / AVX-512 BF16; measured as accurate as fp32 here, README), else fp32.

`auto` picks torch on CUDA, else the fastest installed runtime on this CPU (measured: README,
`poser bench --only runtime`) whose outputs match torch's on the same crops (`parity`), else
torch. A poser weights file is exported on the fly, once: the ONNX graphs are cached on disk
under a key of the weights' hash (`POSER_CACHE`, default ~/.cache/poser).

Shapes: N crops, K joints, S input side.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from poser import __version__
from poser.errors import PoserError
from poser.files import atomic_path, missing_file, write_bytes, write_json
from poser.inference.device import device_type
from poser.spec import ModelSpec, StageSpec
from poser.threads import num_threads

if TYPE_CHECKING:
    import torch

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
FASTEST_FIRST = ("openvino", "onnxruntime")     # measured on this CPU: README, bench runtime
PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}   # module, extra
FP32_PARITY = 1e-3          # max |coords difference| in normalised crop coordinates, fp32 runtimes
BF16_PARITY = 2e-2          # bf16 rounds activations to 8 bits of mantissa (about 1 px at 160: README)
INT8_PARITY = 5e-2          # a sanity bound (the shipped int8 model: 0.022); its accuracy is measured as PCP
META_KEY = "poser_meta"     # ONNX metadata_props / OpenVINO rt_info entry holding the stage's spec
PRECISION_KEY = "poser_precision"   # OpenVINO rt_info: "int8" for a quantized model
SOURCE_KEY = "poser_source"         # ... and the weights_key of the file it was quantized from
OPSET = 17


def installed(runtime: str) -> bool:
    if runtime == "torch":
        return True
    return importlib.util.find_spec(PACKAGES[runtime][0]) is not None


def require(runtime: str) -> None:
    """A missing runtime package: one line naming the extra that installs it."""
    if runtime not in RUNTIMES[1:]:
        raise PoserError(f"unknown runtime {runtime!r} (one of {', '.join(RUNTIMES)})")
    if not installed(runtime):
        module, extra = PACKAGES[runtime]
        raise PoserError(f"--runtime {runtime}: the {module} package is not installed "
                         f"(pip install \"poser[{extra}]\")")


def choose(runtime: str, device, exported: str | None = None) -> str:
    """The runtime `runtime` names, checked; 'auto' is `auto_order`'s first choice. `exported`:
    the suffix of an exported file (.onnx runs on either CPU runtime, OpenVINO's .xml on its own)."""
    allowed = {None: RUNTIMES[1:], ".onnx": ("onnxruntime", "openvino"), ".xml": ("openvino",)}[exported]
    if runtime == "auto":
        order = [r for r in auto_order(device) if r in allowed]
        if not order:
            need = "openvino" if exported == ".xml" else "onnx"
            raise PoserError(f"an exported model needs {' or '.join(allowed)} (pip install \"poser[{need}]\")")
        return order[0]
    require(runtime)
    if runtime != "torch" and device_type(device) != "cpu":
        raise PoserError(f"--runtime {runtime} runs on the CPU; use --device cpu (or --runtime torch on CUDA)")
    if runtime not in allowed:
        hint = "; --runtime torch needs a poser weights file (.safetensors)" if runtime == "torch" else ""
        raise PoserError(f"an exported model ({exported}) runs on {' or '.join(allowed)}, not {runtime}{hint}")
    return runtime


def auto_order(device) -> list[str]:
    """What 'auto' tries, in order: torch on CUDA; else the installed CPU runtimes, fastest first."""
    if device_type(device) == "cuda":
        return ["torch"]
    return [r for r in FASTEST_FIRST if installed(r)] + ["torch"]


def auto_candidates(device, precision: str = "auto") -> list[tuple[str, str]]:
    """(runtime, precision) pairs that 'auto' tries in order. Precision 'auto' is bf16 on
    OpenVINO where the CPU computes bf16 natively (AMX / AVX-512 BF16), else fp32: measured
    within 0.005 PCP of fp32 in both protocols on the shipped model (README, Runtimes)."""
    order = auto_order(device)
    if precision == "auto":
        fast = [("openvino", "bf16")] if "openvino" in order and bf16_cpu() else []
        return fast + [(r, "fp32") for r in order]
    return [(r, precision) for r in order if not (r == "onnxruntime" and precision == "bf16")]


def build(runtime: str, path: Path, precision: str = "auto"):
    """A network of `runtime` from an exported file, on the threads `threads.set_threads` chose."""
    require(runtime)
    threads = num_threads()
    if runtime == "onnxruntime":
        if precision in ("bf16", "int8"):
            raise PoserError(f"--precision {precision} runs on openvino only (ONNX Runtime runs fp32 here)")
        return OnnxRuntimeNetwork(path, threads)
    if runtime == "openvino":
        if precision == "auto":
            precision = "fp32"          # see auto_candidates
        elif precision == "bf16" and not bf16_cpu():
            raise PoserError("--precision bf16: this CPU has no native bf16 (AMX or AVX-512 BF16)")
        return OpenVinoNetwork(path, threads, precision)
    raise PoserError(f"--runtime {runtime}: runs from a poser weights file, not an exported model")


def tolerance(precision: str) -> float:
    return {"bf16": BF16_PARITY, "int8": INT8_PARITY}.get(precision, FP32_PARITY)


@functools.cache
def ov_core():
    """The process's one OpenVINO Core: a second Core in one process can crash it (seen here as
    random segfaults of the test process; ultralytics/ultralytics#25864)."""
    import openvino as ov

    return ov.Core()


@functools.cache
def bf16_cpu() -> bool:
    """Whether OpenVINO reports native bf16 on this CPU (AMX or AVX-512 BF16)."""
    return "BF16" in ov_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


# --- networks: normalised crops (N, 3, S, S) -> raw head outputs as numpy ---------------------

def as_numpy(x) -> np.ndarray:
    """A network input, numpy or a torch tensor on any device, as contiguous float32 numpy."""
    return np.ascontiguousarray(x if isinstance(x, np.ndarray) else x.detach().cpu().numpy(), np.float32)


class TorchNetwork:
    runtime, precision = "torch", "fp32"

    def __init__(self, model: torch.nn.Module, channels_last: bool = True) -> None:
        self.model, self.channels_last = model, channels_last
        self.device = next(model.parameters()).device

    def __call__(self, x) -> dict[str, np.ndarray]:
        import torch

        x = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return {k: v.float().cpu().numpy() for k, v in self.model(x).items()}


class OnnxRuntimeNetwork:
    runtime, precision = "onnxruntime", "fp32"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:      # ORT raises its own types for a corrupt or foreign file
            raise PoserError(f"{path}: not a readable ONNX model ({_first_line(e)})") from None
        self.names = [o.name for o in self.session.get_outputs()]
        self.input = self.session.get_inputs()[0].name
        self.path, self.side = path, self.session.get_inputs()[0].shape[-1]

    def __call__(self, x) -> dict[str, np.ndarray]:
        _check_side(self.path, self.side, x.shape[-1])
        return dict(zip(self.names, self.session.run(self.names, {self.input: as_numpy(x)}), strict=True))


class OpenVinoNetwork:
    """OpenVINO on the CPU, one request on all threads. (Its THROUGHPUT mode, one stream per
    thread with the batch split between them, ran 2-10% faster here but crashed the test
    process at random: not used. Two threads searching two halves of a batch at once, so that
    one cuts crops while the other's run, was 5-15% slower: the requests contend for the cores.)"""

    runtime = "openvino"

    def __init__(self, path: Path, threads: int, precision: str) -> None:
        core = ov_core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                  "CACHE_DIR": str(cache_root() / "openvino")}       # a second start skips compiling
        try:
            model = core.read_model(str(path))
            self.names = [o.get_any_name() for o in model.outputs]     # compiling may rename fused outputs
            quantized = model.has_rt_info(PRECISION_KEY) and model.get_rt_info(PRECISION_KEY).astype(str) == "int8"
            self.model, self.config = model, config
        except Exception as e:
            raise PoserError(f"{path}: not a model OpenVINO can read ({_first_line(e)})") from None
        if precision == "int8" and not quantized:
            raise PoserError(f"{path}: not an int8 model (make one with poser export --int8)")
        self.precision = "int8" if quantized else precision     # int8 layers stay int8, the rest runs fp32
        self.path, self.side = path, model.inputs[0].get_partial_shape()[3].get_length()
        # Compiled on first use, per input kind (None: normalised floats; (mean, std): uint8
        # pixels): photos need only the pixel graph, prepared caches only the float one.
        self._requests: dict[tuple | None, tuple] = {}
        # An infer request runs one inference at a time ("Infer Request is busy" otherwise):
        # calls from several threads take turns, as torch's and ONNX Runtime's would share the cores.
        self._lock = threading.Lock()

    def __call__(self, x) -> dict[str, np.ndarray]:
        _check_side(self.path, self.side, x.shape[-1])
        return self._infer(None, as_numpy(x))

    def pixels(self, crops: np.ndarray, mean, std) -> dict[str, np.ndarray]:
        """uint8 crops (N, S, S, 3) through a second compiled graph whose input is those
        pixels: layout, type and normalisation happen inside OpenVINO."""
        _check_side(self.path, self.side, crops.shape[2])
        return self._infer((tuple(mean), tuple(std)), np.ascontiguousarray(crops, np.uint8))

    def _infer(self, key, x: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            return self._infer_locked(key, x)

    def _infer_locked(self, key, x: np.ndarray) -> dict[str, np.ndarray]:
        if key not in self._requests:
            model = self.model if key is None else _pixel_graph(self.model.clone(), *key)
            try:
                compiled = ov_core().compile_model(model, "CPU", self.config)
            except Exception as e:
                raise PoserError(f"{self.path}: OpenVINO cannot compile it for this CPU ({_first_line(e)})") from None
            self._requests[key] = compiled, compiled.create_infer_request()
        compiled, request = self._requests[key]
        res = request.infer({0: x})
        return {n: np.array(res[o]) for n, o in zip(self.names, compiled.outputs, strict=True)}


def _pixel_graph(model, mean, std):
    """The OpenVINO graph taking uint8 RGB (N, S, S, 3): to float, (x - 255 mean) / (255 std), NCHW."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32).mean([255 * v for v in mean]).scale(
        [255 * v for v in std])
    return ppp.build()


def _check_side(path: Path, side, given: int) -> None:
    """An exported graph takes one input side; a file whose metadata says another is a defect
    of the file, said in one line (not the runtime's shape error)."""
    if isinstance(side, int) and given != side:
        raise PoserError(f"{path}: the exported network takes {side} px crops but its metadata says "
                         f"{given} (re-export it with poser export)")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


# --- export --------------------------------------------------------------------------------

def export_onnx(model: torch.nn.Module, spec: StageSpec, path: Path) -> Path:
    """One network as ONNX: input `input` (N, 3, S, S) normalised, dynamic batch; outputs the
    head's raw outputs by name; the stage's spec in the file's metadata (`poser_meta`)."""
    import onnx
    import torch

    model = model.eval().float().to("cpu")
    dummy = torch.zeros(2, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        names = list(model(dummy))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # The trace fixes the input side (S); shape checks in the backbones trace as constants,
        # which is right for that S. The batch stays dynamic.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)     # the TorchScript exporter (it traces these nets)
        torch.onnx.export(model, (dummy,), str(tmp), input_names=["input"], output_names=names,
                          dynamic_axes={"input": {0: "n"}, **{k: {0: "n"} for k in names}},
                          opset_version=OPSET, dynamo=False)
        m = onnx.load(str(tmp))
        entry = m.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(spec.to_meta())
        m.producer_name, m.producer_version = "poser", __version__
        onnx.save(m, str(tmp))
    return path


def export_model(stages: list[tuple[torch.nn.Module, StageSpec]], dst: Path, fmt: str) -> list[Path]:
    """A model as ONNX (`dst`, and `dst` with .stage2.onnx, ... for a cascade's later stages)
    or as OpenVINO IR (dst.xml + dst.bin per stage, the spec in its rt_info)."""
    dst = Path(dst)
    out = []
    for s, (model, spec) in enumerate(stages, start=1):
        suffix = "" if s == 1 else f".stage{s}"
        if fmt == "onnx":
            out.append(export_onnx(model, spec, dst.with_name(f"{dst.stem}{suffix}.onnx")))
        elif fmt == "openvino":
            import openvino as ov

            onnx_tmp = export_onnx(model, spec, dst.with_name(f".{dst.stem}{suffix}.tmp.onnx"))
            try:
                ir = ov.convert_model(str(onnx_tmp))
                ir.set_rt_info(json.dumps(spec.to_meta()), META_KEY)
                xml = dst.with_name(f"{dst.stem}{suffix}.xml")
                ov.save_model(ir, str(xml), compress_to_fp16=False)
                out.append(xml)
            finally:
                onnx_tmp.unlink(missing_ok=True)
        else:
            raise PoserError(f"unknown export format {fmt!r} (onnx, openvino, or safetensors via --storage)")
    return out


def export_file(weights: Path, dst: Path, fmt: str, decode_radius: float | None = None) -> dict:
    """`poser export --format onnx|openvino`: a poser weights file as exported files."""
    from poser.models.deeppose import load_stages

    for module in ("onnx", "openvino") if fmt == "openvino" else ("onnx",):
        if importlib.util.find_spec(module) is None:
            raise PoserError(f"--format {fmt}: the {module} package is not installed (pip install \"poser[{fmt}]\")")
    stages = load_stages(Path(weights), "cpu")
    if decode_radius is not None:
        from dataclasses import replace

        stages = [(m, replace(s, decode_radius=decode_radius)) for m, s in stages]
    files = export_model(stages, Path(dst), fmt)
    return {"src": str(weights), "format": fmt, "files": [str(f) for f in files], "stages": len(stages)}


def exported_spec(path: Path) -> ModelSpec:
    """The spec inside an exported file (.onnx or OpenVINO .xml) and its later stages' siblings."""
    specs = []
    for p in exported_stages(path):
        specs.append(StageSpec.from_meta(json.loads(_read_meta(p)), str(p)))
    return ModelSpec(tuple(specs))


def exported_stages(path: Path) -> list[Path]:
    path = Path(path)
    if not path.is_file():
        raise PoserError(missing_file(path))
    out, s = [path], 2
    while (nxt := path.with_name(f"{path.stem}.stage{s}{path.suffix}")).is_file():
        out.append(nxt)
        s += 1
    return out


def _read_meta(path: Path) -> str:
    try:
        if path.suffix == ".onnx":
            import onnx

            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        else:

            model = ov_core().read_model(str(path))
            props = {META_KEY: model.get_rt_info(META_KEY).astype(str)} if model.has_rt_info(META_KEY) else {}
    except PoserError:
        raise
    except Exception as e:
        raise PoserError(f"{path}: not a readable {'ONNX' if path.suffix == '.onnx' else 'OpenVINO'} model "
                         f"({_first_line(e)})") from None
    if META_KEY not in props:
        raise PoserError(f"{path}: an exported model without poser metadata (export it with poser export)")
    return props[META_KEY]


def int8_sibling(weights: Path) -> Path | None:
    """`<weights stem>.int8.xml` beside a weights file, if it was quantized from these weights."""
    path = Path(weights).with_name(f"{Path(weights).stem}.int8.xml")
    if not path.is_file() or not installed("openvino"):
        return None

    try:
        model = ov_core().read_model(str(path))
        ok = model.has_rt_info(SOURCE_KEY) and model.get_rt_info(SOURCE_KEY).astype(str) == weights_key(weights)
    except Exception:       # an unreadable sibling is not used; the weights file still runs
        return None
    return path if ok else None


def is_exported(path: Path) -> bool:
    return Path(path).suffix in (".onnx", ".xml")


# --- the on-disk cache of exports of poser weights files --------------------------------------

def cache_root() -> Path:
    return Path(os.environ.get("POSER_CACHE") or Path.home() / ".cache" / "poser")


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


def parity(reference: list, candidate: list, specs: ModelSpec, seed: int = 0) -> float:
    """Max |coords difference| (normalised crop coordinates) between two runtimes' networks on
    the same crops, over every stage. The raw `coords` output (the fc head's regression, the
    integral head's whole-map expectation) is continuous in the input, so the difference
    measures the runtime, not the instability of a flat heatmap's arg-max."""
    worst = 0.0
    rng = np.random.default_rng(seed)
    for ref, cand, spec in zip(reference, candidate, specs.stages, strict=True):
        x = rng.standard_normal((4, 3, spec.input_size, spec.input_size), dtype=np.float32)
        worst = max(worst, float(np.abs(ref(x)["coords"] - cand(x)["coords"]).max()))
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
