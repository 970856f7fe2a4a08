"""Runtimes: what runs a network's forward. The decode, crops and cascade stay the Predictor's;
a runtime only turns a normalised batch (N, 3, S, S) into the head's raw outputs, or (`pixels`)
a batch of uint8 RGB crops (N, S, S, 3) as OpenCV cuts them from photos: OpenVINO converts and
normalises those inside its compiled graph (measured: a quarter of a batch's time on the CPU
was torch's conversion of the crops and the copy into the runtime, docs/runtimes.md); for the others the
Predictor converts them (`codec.pixels_to_input`).

Every network takes a normalised float32 batch, numpy or torch, and returns its raw outputs as
numpy arrays, which the codec decodes (`codec.decode_outputs`): a model that runs on OpenVINO
or ONNX Runtime never imports torch once its export is cached.

- `torch`: eager PyTorch (CUDA, or the CPU in fp32 with channels_last).
- `onnxruntime`: the network exported to ONNX, on ONNX Runtime's CPU provider.
- `openvino`: the same ONNX graph compiled by OpenVINO for this CPU: bf16 where the CPU has
  it natively (AMX / AVX-512 BF16; measured as accurate as fp32 here, docs/runtimes.md), else fp32.

`auto` picks torch on CUDA, else the fastest installed runtime on this CPU (measured: docs,
`poser bench --only runtime`) whose outputs match torch's on the same crops (`parity`), else
torch. A poser weights file is exported on the fly, once: the ONNX graphs are cached on disk
under a key of the weights' hash (`POSER_CACHE`, default ~/.cache/poser).

Shapes: N crops, K joints, S input side.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from poser.device import device_type
from poser.errors import PoserError
from poser.files import cache_root
from poser.threads import num_threads, sync_torch

if TYPE_CHECKING:
    import torch

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
FASTEST_FIRST = ("openvino", "onnxruntime")     # measured on this CPU: docs, bench runtime
PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}   # module, extra
FP32_PARITY = 1e-3          # max |coords difference| in normalised crop coordinates, fp32 runtimes
# bf16 rounds activations to 8 bits of mantissa; the shipped model differs by 0.022 and loses under
# 0.002 PCP against fp32 in both protocols (docs/runtimes.md)
BF16_PARITY = 3e-2
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
        raise PoserError(f"`runtime` {runtime}: the {module} package is not installed "
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
        raise PoserError(f"`runtime` {runtime} runs on the CPU; use `device` cpu (or `runtime` torch on CUDA)")
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
    within 0.005 PCP of fp32 in both protocols on the shipped model (docs/runtimes.md, Runtimes)."""
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
            raise PoserError(f"`precision` {precision} runs on openvino only (ONNX Runtime runs fp32 here)")
        return OnnxRuntimeNetwork(path, threads)
    if runtime == "openvino":
        if precision == "auto":
            precision = "fp32"          # see auto_candidates
        elif precision == "bf16" and not bf16_cpu():
            raise PoserError("`precision` bf16: this CPU has no native bf16 (AMX or AVX-512 BF16)")
        return OpenVinoNetwork(path, threads, precision)
    raise PoserError(f"`runtime` {runtime}: runs from a poser weights file, not an exported model")


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


def torch_networks(models: list, device, channels_last: bool = True) -> tuple[list, list]:
    """torch models on `device` in eval mode (channels_last: faster CPU convolutions) and the
    networks that run them."""
    import torch

    sync_torch()
    device = torch.device(device)
    models = [m.to(device).eval() for m in models]
    if channels_last:
        models = [m.to(memory_format=torch.channels_last) for m in models]
    return models, [TorchNetwork(m, channels_last) for m in models]


class OnnxRuntimeNetwork:
    runtime, precision = "onnxruntime", "fp32"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:      # ORT raises its own types for a corrupt or foreign file
            raise PoserError(f"{path}: not a readable ONNX model ({first_line(e)})") from None
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
            raise PoserError(f"{path}: not a model OpenVINO can read ({first_line(e)})") from None
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
                raise PoserError(f"{self.path}: OpenVINO cannot compile it for this CPU ({first_line(e)})") from None
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


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]

