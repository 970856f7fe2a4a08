"""One export door: `export(weights, dst, format=...)` writes a poser weights file in another
format, for the command line (`poser export`) and Python (`poser.export`) alike. Every format is
one row of FORMATS.

- safetensors: the weights re-stored (fp16 halves the file, int8 quarters its weight matrices);
- onnx: each stage's network, dynamic batch, raw head outputs, its spec in the file's metadata;
- openvino: OpenVINO IR (.xml + .bin) of the same graphs; `int8=True` quantizes weights and
  activations (NNCF), calibrated on a dataset's training crops.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from poser.errors import PoserError
from poser.spec import ModelSpec

FORMATS = {     # format: (what it writes, the packages it needs, the extra that installs them)
    "safetensors": ("weights re-stored (storage fp32, fp16 or int8)", (), None),
    "onnx": ("ONNX graphs, the spec in their metadata", ("onnx",), "onnx"),
    "openvino": ("OpenVINO IR (.xml + .bin), fp32 or int8", ("onnx", "openvino"), "openvino"),
}


def export(weights: str | Path, dst: str | Path, format: str = "safetensors", *, storage: str = "fp16",  # noqa: A002
           decode_radius: float | None = None, flip_test: bool | None = None, int8: bool = False,
           calibration: str | Path | None = None, average_with: str | Path | None = None,
           share: float = 0.5, skeleton: str | None = None) -> dict:
    """Write `weights` (a poser weights file or cascade bundle) as `dst` in `format`; returns what
    was written. `decode_radius` (integral head) sets the decode window the export carries,
    `flip_test` whether the flip test is the model's default (None: as in `weights`);
    `int8` (openvino) needs `calibration`, a dataset whose training split calibrates it;
    `average_with` (safetensors) averages in another fine-tune of the same network, `share` of it
    (of another skeleton: the joints both know); `skeleton` (safetensors) keeps only its joints
    (e.g. lsp14 of a body19 model)."""
    weights, dst = Path(weights), Path(dst)
    if format not in FORMATS:
        raise PoserError(f"unknown export format {format!r} (one of {', '.join(FORMATS)})")
    if int8 and (format != "openvino" or calibration is None):
        raise PoserError("int8 export writes OpenVINO IR (format openvino) and needs a calibration dataset")
    if (average_with is not None or skeleton is not None) and format != "safetensors":
        raise PoserError("averaging and keeping a skeleton's joints write a safetensors file; export that "
                         "one to other formats")
    _require(format, ("nncf",) if int8 else ())
    if format == "safetensors":
        from poser.models.weights import export_weights

        res = export_weights(weights, dst, storage, decode_radius, flip_test,
                             None if average_with is None else Path(average_with), share, skeleton)
        return res | {"format": format, "storage": storage}
    if int8:
        from poser.exporter.int8 import export_int8

        return export_int8(weights, dst, Path(calibration))
    return _graphs(weights, dst, format, decode_radius, flip_test)


def _require(format: str, more: tuple[str, ...]) -> None:  # noqa: A002
    for module in FORMATS[format][1] + more:
        if importlib.util.find_spec(module) is None:
            extra = "int8" if module == "nncf" else FORMATS[format][2]
            raise PoserError(f"export to {format}: the {module} package is not installed "
                             f"(pip install \"poser[{extra}]\")")


def _graphs(weights: Path, dst: Path, format: str, decode_radius: float | None,  # noqa: A002
            flip_test: bool | None) -> dict:
    from poser.models.deeppose import load_stages
    from poser.runtime.exported import export_model

    stages = load_stages(weights, "cpu")
    spec = ModelSpec(tuple(s for _, s in stages)).with_test(decode_radius, flip_test)
    stages = [(m, s) for (m, _), s in zip(stages, spec.stages, strict=True)]
    files = export_model(stages, dst, format)
    return {"src": str(weights), "format": format, "files": [str(f) for f in files], "stages": len(stages)}
