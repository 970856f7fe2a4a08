"""`poser demo`, `export` and `bench`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from poser.bench import SECTIONS
from poser.cli.options import (
    DataOpt,
    JsonOpt,
    ThreadsOpt,
    app,
    out_option,
    report_errors,
    write_result,
)
from poser.console import results
from poser.errors import PoserError
from poser.threads import set_threads

DemoOutOpt = out_option("runs/demo")

@app.command()
@report_errors
def demo(
    out: DemoOutOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="A smaller, faster run (a smoke test).")] = False,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """The whole pipeline on synthetic data.

    Makes a dataset, trains, evaluates and annotates, in a few minutes."""
    set_threads(threads)
    from poser.evaluate.report import report_tables
    from poser.synth.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=str(out or "runs/demo"))
    if quick:
        cfg = DemoConfig(out=cfg.out, images=300, epochs=1, stage2_epochs=1, video_frames=20)
    res = run_demo(cfg)
    for t in report_tables(res["report"]):
        results.print(t)
    t = Table("what", "where", title=f"poser demo: done in {res['seconds']:.0f} s")
    for what, where in (("synthetic COCO-format dataset", res["dataset"]), ("stage-1 run", res["stage1"]),
                        ("stage-2 run (the cascade)", res["stage2"]), ("cascade weights", res["weights"]),
                        ("evaluation (metrics, plots, examples)", res["eval"]),
                        ("annotated video, image and keypoints.json", res["annotated"])):
        t.add_row(what, where)
    results.print(t)
    write_result(json_out, {k: v for k, v in res.items() if k != "report"})


class Storage(StrEnum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class ExportFormat(StrEnum):
    safetensors = "safetensors"
    onnx = "onnx"
    openvino = "openvino"


@app.command()
@report_errors
def export(
    weights: Annotated[Path, typer.Argument(
        metavar="WEIGHTS", help="A weights file or cascade bundle (e.g. a run's best.safetensors).")],
    dst: Annotated[Path, typer.Argument(
        metavar="OUT", help="The file to write (.safetensors, .onnx, or .xml for openvino).")],
    fmt: Annotated[ExportFormat, typer.Option(
        "--format", help="safetensors (re-stored, see --storage), onnx (dynamic batch, raw head outputs, the "
        "model's spec in its metadata) or openvino (IR: .xml + .bin).")] = ExportFormat.safetensors,
    storage: Annotated[Storage, typer.Option(
        "--storage", help="safetensors: fp16 halves the file; int8 (per-channel) quarters its weight "
        "matrices.")] = Storage.fp16,
    decode_radius: Annotated[float | None, typer.Option(
        "--decode-radius", min=1.0, show_default=False, help="Integral head: decode within this many heatmap "
        "cells of the peak (measure it with eval first). [default: the source's; none: the whole map]")] = None,
    flip_test: Annotated[bool | None, typer.Option(
        "--flip-test/--no-flip-test", show_default=False, help="Make the flip test the model's default in "
        "annotate, eval and poser.load() (measure it with eval --flip first). [default: the source's]")] = None,
    int8: Annotated[bool, typer.Option(
        "--int8", help="openvino: int8 weights and activations (NNCF), calibrated on --calibration's "
        "training crops; as <weights stem>.int8.xml beside the weights, --runtime auto finds it.")] = False,
    calibration: Annotated[Path | None, typer.Option(
        "--calibration", help="--int8: the dataset whose training split calibrates it.")] = None,
    average_with: Annotated[Path | None, typer.Option(
        "--average-with", metavar="WEIGHTS", help="Average in another fine-tune of the same network (a model "
        "soup): e.g. an earlier leg of a long run, or a COCO-17 fine-tune for an LSP-14 file (the joints both "
        "know).")] = None,
    share: Annotated[float | None, typer.Option(
        "--share", min=0.0, max=1.0, show_default=False,
        help="--average-with: that file's share of the average. [default: 0.5]")] = None,
    skeleton: Annotated[str | None, typer.Option(
        "--skeleton", show_default=False, help="Keep only this skeleton's joints (e.g. lsp14 or coco17 of a "
        "body19 model). [default: all the model's]")] = None,
    json_out: JsonOpt = None,
) -> None:
    """Weights as fp16/int8, ONNX or OpenVINO.

    Smaller safetensors (fp16, int8), ONNX, or OpenVINO IR (fp32 or int8)."""
    from poser.exporter import export as export_to

    if share is not None and average_with is None:
        raise PoserError("--share is the --average-with file's share: give that file too")
    share = 0.5 if share is None else share
    res = export_to(weights, dst, fmt.value, storage=storage.value, decode_radius=decode_radius,
                    flip_test=flip_test, int8=int8, calibration=calibration, average_with=average_with,
                    share=share, skeleton=skeleton)
    if fmt == ExportFormat.safetensors:
        mixed = f", {share:.0%} of it {average_with}" if average_with else ""
        mixed += f", {skeleton}'s joints" if skeleton else ""
        results.print(f"{dst}: {res['dst_bytes'] / 1e6:.1f} MB ({storage.value}{mixed}; {weights} was "
                      f"{res['src_bytes'] / 1e6:.1f} MB)", soft_wrap=True)
    else:
        how = f"int8, calibrated on {res['calibration']['crops']} crops of {calibration}" if int8 else \
            f"{res['stages']} stage(s), the spec in the file's metadata"
        results.print(f"{', '.join(res['files'])}: {fmt.value} ({how})", soft_wrap=True)
    write_result(json_out, res)


@app.command()
@report_errors
def bench(
    only: Annotated[list[str] | None, typer.Option(
        "--only", metavar="SECTION", help=f"Run only this section (repeatable): {', '.join(SECTIONS)}. "
        "[default: all]")] = None,
    data: DataOpt = None,
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="Model for the annotate and runtime sections. [default: the shipped reference "
        "model]")] = None,
    json_out: JsonOpt = None,
) -> None:
    """Throughput here, next to what limits it."""
    from poser.bench.sections import run

    rows = run(only, data, weights)
    t = Table("section", "what", "throughput", "limit or comparison", "of it", title="poser bench")
    for r in rows:
        lim = f"{r['limit']:,.1f} {r['unit']} ({r['limit_what']})" if r["limit"] else ""
        of = "" if not r["of_limit"] else f"{r['of_limit']:,.1f}x" if r.get("ratio") else f"{r['of_limit']:.0%}"
        t.add_row(r["section"], r["what"], f"{r['rate']:,.1f} {r['unit']}", lim, of)
    results.print(t)
    write_result(json_out, {"rows": rows})
