"""A TFLite convolution graph rebuilt as a torch module: `Topology` (the graph, no weights) and
`GraphNet` (the module that runs it), plus `read_tflite` (topology and weights from a .tflite file).

Covers the operators of MediaPipe's BlazePose landmark networks: PAD, DEQUANTIZE (fp16 weights),
CONV_2D, DEPTHWISE_CONV_2D, ADD, RESIZE_BILINEAR, MAX_POOL_2D, RESHAPE, LOGISTIC, with fused
ReLU / ReLU6. A topology is plain JSON (ops with tensor ids and their settings), so a poser
weights file rebuilds the module from the topology shipped with poser and its own tensors:
neither the .tflite file nor the `tflite` package is needed to run a trained model.

Layouts: TFLite is NHWC, torch NCHW. Conv kernels are stored [O, kh, kw, I] (depthwise
[1, kh, kw, C]) and become [O, I, kh, kw] ([C, 1, kh, kw], groups C). 'SAME' padding follows
TensorFlow (the odd pixel after, for stride 2); resizes use half-pixel centres, as
`F.interpolate(align_corners=False)` does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from poser.errors import PoserError

Topology = dict[str, Any]   # {"input": id, "ops": [op dicts], "outputs": {name: id}, "shapes": {id: NHWC}}

_ACTS = {0: None, 1: "relu", 3: "relu6"}


class GraphNet(nn.Module):
    """Runs the part of a topology that `outputs` (names of `topology['outputs']`) need.

    forward: (N, C, H, W) float input -> a list of NCHW tensors (RESHAPE'd outputs (N, D))."""

    def __init__(self, topology: Topology, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.out_ids = [int(topology["outputs"][o]) for o in outputs]
        self.input_id = int(topology["input"])
        self.ops = _needed(topology["ops"], self.out_ids)
        self.convs = nn.ModuleDict()
        for op in self.ops:
            if op["op"] in ("conv", "dwconv"):
                o, i, kh, kw = op["shape"]
                groups = o if op["op"] == "dwconv" else 1
                self.convs[f"op{op['id']}"] = nn.Conv2d(i * groups, o, (kh, kw), op["stride"], groups=groups)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        env = {self.input_id: x}
        for op in self.ops:
            env[op["out"]] = _run(op, [env[t] for t in op["in"]], self.convs)
        return [env[t] for t in self.out_ids]


def _run(op: dict, ins: list[torch.Tensor], convs: nn.ModuleDict) -> torch.Tensor:
    kind, x = op["op"], ins[0]
    if kind in ("conv", "dwconv"):
        if op["same"]:
            x = _same_pad(x, op["shape"][2:], op["stride"])
        y = convs[f"op{op['id']}"](x)
    elif kind == "add":
        y = x + ins[1]
    elif kind == "pad":
        y = F.pad(x, op["pad"])
    elif kind == "maxpool":
        if op["same"]:
            x = _same_pad(x, (op["k"], op["k"]), op["stride"], value=-math.inf)
        y = F.max_pool2d(x, op["k"], op["stride"])
    elif kind == "resize":
        y = F.interpolate(x, scale_factor=op["scale"], mode="bilinear", align_corners=False)
    elif kind == "logistic":
        y = torch.sigmoid(x)
    elif kind == "reshape":
        y = x.flatten(1)            # only after 1 x 1 maps, where NHWC and NCHW orders agree
    else:
        raise PoserError(f"unknown graph op {kind!r}")
    act = op.get("act")
    return F.relu6(y) if act == "relu6" else F.relu(y) if act == "relu" else y


def _same_pad(x: torch.Tensor, k, stride: int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow's 'SAME': out = ceil(in / stride), the odd padding pixel after."""
    pads = []
    for size, kk in ((x.shape[-1], k[1]), (x.shape[-2], k[0])):
        total = max((math.ceil(size / stride) - 1) * stride + kk - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value) if any(pads) else x


def _needed(ops: list[dict], out_ids: list[int]) -> list[dict]:
    """The ops that the outputs depend on, in graph order."""
    producer = {op["out"]: op for op in ops}
    want, stack = set(), list(out_ids)
    while stack:
        t = stack.pop()
        if t in producer and producer[t]["id"] not in want:
            want.add(producer[t]["id"])
            stack.extend(producer[t]["in"])
    return [op for op in ops if op["id"] in want]


# --- reading a .tflite file (training side: needs the `tflite` package) ---------------------

def read_tflite(path: Path) -> tuple[Topology, dict[str, torch.Tensor]]:
    """A .tflite file's topology and its weights as a GraphNet state dict (fp32, torch layout)."""
    try:
        import tflite
        from tflite.BuiltinOperator import BuiltinOperator
    except ImportError:
        raise PoserError("reading a .tflite file needs the tflite package: pip install tflite") from None
    data = Path(path).read_bytes()
    if data[4:8] != b"TFL3":            # the flatbuffer's file identifier
        raise PoserError(f"{path}: not a TFLite model (no TFL3 identifier)")
    try:
        model = tflite.Model.GetRootAsModel(data, 0)
        graph = model.Subgraphs(0)
    except Exception as e:  # flatbuffers raises plain errors on garbage
        raise PoserError(f"{path}: not a TFLite model ({type(e).__name__})") from None
    names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    reader = _Reader(model, graph, names, tflite)
    return reader.topology(), reader.weights


class _Reader:
    """Walks the flatbuffer once: ops into topology dicts, constant tensors into weights."""

    def __init__(self, model, graph, names: dict[int, str], tfl) -> None:
        self.m, self.g, self.names, self.tfl = model, graph, names, tfl
        self.dequantized: dict[int, int] = {}      # fp32 tensor id -> its fp16 constant's id
        self.weights: dict[str, torch.Tensor] = {}

    def shape(self, t: int) -> list[int]:
        return self.g.Tensors(t).ShapeAsNumpy().tolist()

    def const(self, t: int) -> np.ndarray:
        t = self.dequantized.get(t, t)
        tensor = self.g.Tensors(t)
        raw = self.m.Buffers(tensor.Buffer()).DataAsNumpy()
        dtype = {0: np.float32, 1: np.float16, 2: np.int32}[tensor.Type()]
        return np.asarray(raw).view(dtype).reshape(self.shape(t)).astype(np.float32 if dtype != np.int32 else np.int32)

    def topology(self) -> Topology:
        ops = []
        for i in range(self.g.OperatorsLength()):
            op = self.g.Operators(i)
            code = self.m.OperatorCodes(op.OpcodeIndex())
            kind = self.names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
            ins = [op.Inputs(j) for j in range(op.InputsLength())]
            out = op.Outputs(0)
            if kind == "DEQUANTIZE":
                self.dequantized[out] = ins[0]
                continue
            ops.append({"id": i, "in": ins, "out": out} | self.settings(kind, i, op, ins, out))
        outputs = {self.g.Tensors(self.g.Outputs(j)).Name().decode(): self.g.Outputs(j)
                   for j in range(self.g.OutputsLength())}
        for op in ops:          # the constant inputs are weights now, not graph tensors
            op["in"] = op["in"][:2] if op["op"] == "add" else op["in"][:1]
        return {"input": self.g.Inputs(0), "ops": ops, "outputs": outputs}

    def settings(self, kind: str, i: int, op, ins: list[int], out: int) -> dict:
        tfl, opts = self.tfl, op.BuiltinOptions()
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            o = (tfl.Conv2DOptions if kind == "CONV_2D" else tfl.DepthwiseConv2DOptions)()
            o.Init(opts.Bytes, opts.Pos)
            if o.StrideW() != o.StrideH() or o.DilationWFactor() != 1 or o.DilationHFactor() != 1:
                raise PoserError(f"op {i}: strides or dilations this rebuild does not cover")
            w = self.const(ins[1])
            if kind == "DEPTHWISE_CONV_2D":
                w = w.transpose(3, 0, 1, 2)           # [1, kh, kw, C] -> [C, 1, kh, kw]
            else:
                w = w.transpose(0, 3, 1, 2)           # [O, kh, kw, I] -> [O, I, kh, kw]
            self.weights[f"op{i}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
            self.weights[f"op{i}.bias"] = torch.from_numpy(self.const(ins[2]))
            return {"op": "conv" if kind == "CONV_2D" else "dwconv", "shape": list(w.shape), "stride": o.StrideW(),
                    "same": o.Padding() == 0, "act": self.act(o, i)}
        if kind == "ADD":
            o = tfl.AddOptions()
            o.Init(opts.Bytes, opts.Pos)
            return {"op": "add", "act": self.act(o, i)}
        if kind == "PAD":
            p = self.const(ins[1]).tolist()       # [[n0, n1], [t, b], [l, r], [c0, c1]]
            if p[0] != [0, 0]:
                raise PoserError(f"op {i}: padding of the batch")
            return {"op": "pad", "pad": [*p[2], *p[1], *p[3]]}    # F.pad's order: W, H, C
        if kind == "MAX_POOL_2D":
            o = tfl.Pool2DOptions()
            o.Init(opts.Bytes, opts.Pos)
            return {"op": "maxpool", "k": o.FilterWidth(), "stride": o.StrideW(), "same": o.Padding() == 0,
                    "act": self.act(o, i)}
        if kind == "RESIZE_BILINEAR":
            o = tfl.ResizeBilinearOptions()
            o.Init(opts.Bytes, opts.Pos)
            if o.AlignCorners() or not o.HalfPixelCenters():
                raise PoserError(f"op {i}: a resize convention this rebuild does not cover")
            size, have = self.const(ins[1]).tolist(), self.shape(ins[0])[1:3]
            if size[0] / have[0] != size[1] / have[1]:
                raise PoserError(f"op {i}: an anisotropic resize")
            return {"op": "resize", "scale": size[0] / have[0]}
        if kind in ("LOGISTIC", "RESHAPE"):
            return {"op": kind.lower()}
        raise PoserError(f"op {i}: TFLite operator {kind} is not covered by this rebuild")

    @staticmethod
    def act(options, i: int) -> str | None:
        code = options.FusedActivationFunction()
        if code not in _ACTS:
            raise PoserError(f"op {i}: fused activation {code} is not covered by this rebuild")
        return _ACTS[code]
