"""Exported files: a model's networks written as ONNX (the cache's and `poser export`'s) or
OpenVINO IR, each stage's spec inside the file, and read back (`exported_spec`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from poser.errors import PoserError
from poser.files import atomic_path, missing_file
from poser.runtime.networks import META_KEY, OPSET, first_line, ov_core
from poser.spec import ModelSpec, StageSpec
from poser.version import __version__

if TYPE_CHECKING:
    import torch


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
            raise PoserError(f"unknown export format {fmt!r} (onnx, openvino, or safetensors via `storage`)")
    return out



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
                         f"({first_line(e)})") from None
    if META_KEY not in props:
        raise PoserError(f"{path}: an exported model without poser metadata (export it with poser export)")
    return props[META_KEY]




def is_exported(path: Path) -> bool:
    return Path(path).suffix in (".onnx", ".xml")

