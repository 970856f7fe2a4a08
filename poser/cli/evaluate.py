"""`poser eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from poser.cli.options import (
    DetectorOpt,
    DetectorWeightsOpt,
    Device,
    DeviceOpt,
    FlipOpt,
    JsonOpt,
    MaxPeopleOpt,
    PersonThresholdOpt,
    PrecisionOpt,
    RuntimeOpt,
    SearchOpt,
    StagesOpt,
    ThreadsOpt,
    WeightsOpt,
    app,
    data_option,
    out_option,
    report_errors,
    write_result,
)
from poser.console import results
from poser.evaluate.config import EvalConfig
from poser.threads import set_threads

_E = EvalConfig       # every default below is its (one place)


EvalDataOpt = data_option("data/lspet for an LSP-14 model, else data/coco")
EvalOutOpt = out_option("runs/eval; the run goes to OUT/NAME, NAME from --name or exp1, exp2, ...")

@app.command("eval")
@report_errors
def eval_(
    weights: WeightsOpt = None,
    data: EvalDataOpt = None,
    split: Annotated[str, typer.Option("--split", help="Split to score.")] = _E.split,
    flip: FlipOpt = None,
    pcp_threshold: Annotated[float, typer.Option(
        "--pcp-threshold", min=0.0, help="PCP: x limb length.")] = _E.pcp_threshold,
    boxes: Annotated[Path | None, typer.Option(
        "--boxes", help="COCO detection results (person boxes) for COCO AP with detected boxes.")] = None,
    detector: DetectorOpt = None,
    detector_weights: DetectorWeightsOpt = None,
    person_threshold: PersonThresholdOpt = _E.person_threshold,
    max_people: MaxPeopleOpt = _E.max_people,
    predictions: Annotated[Path | None, typer.Option(
        "--predictions", help="Score these COCO keypoint results instead of a model.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="First N persons only.")] = None,
    whole_image: Annotated[bool, typer.Option(
        "--whole-image", help="No boxes: find the person from each whole photo (DeepPose's LSP protocol).")] = False,
    search: SearchOpt = _E.search_passes,
    stages: StagesOpt = None,
    cache: Annotated[Path | None, typer.Option(
        "--cache", help="Folder for the prepared crops of this dataset [default: DATA/cache]; for read-only "
        "data.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Crops per model batch.")] = _E.batch_size,
    device: DeviceOpt = Device.auto,
    runtime: RuntimeOpt = _E.runtime,
    precision: PrecisionOpt = _E.precision,
    out: EvalOutOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default: exp1, exp2, ...).")] = None,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Score a model: PCP, PDJ and COCO AP.

    As tables, JSON and plots, in runs/eval/NAME."""
    set_threads(threads)
    from poser.evaluate.report import report_tables
    from poser.evaluate.run import evaluate

    cfg = EvalConfig(data=str(data) if data else None, weights=str(weights) if weights else None, split=split,
                     flip=flip, pcp_threshold=pcp_threshold, boxes=str(boxes) if boxes else None,
                     person_threshold=person_threshold, predictions=str(predictions) if predictions else None,
                     detector=detector, detector_weights=str(detector_weights) if detector_weights else None,
                     max_people=max_people, out=str(out or "runs/eval"), name=name, device=device.value,
                     runtime=runtime.value, precision=precision.value,
                     batch_size=batch_size, limit=limit, stages=stages, whole_image=whole_image, search_passes=search,
                     cache=str(cache) if cache else None)
    report = evaluate(cfg)
    for t in report_tables(report):
        results.print(t)
    results.print(f"run folder: {report['run']} (metrics.json, pdj_curve.png, pdj_per_joint.png, examples.png)",
                  soft_wrap=True)
    write_result(json_out, report)
