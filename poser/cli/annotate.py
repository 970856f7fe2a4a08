"""`poser annotate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from poser.annotate.config import AnnotateConfig
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
    out_option,
    report_errors,
    write_result,
)
from poser.console import results
from poser.errors import PoserError
from poser.threads import set_threads

_C = AnnotateConfig     # every default below is its (one place)


AnnotateOutOpt = out_option("runs/annotate/NAME, NAME from --name or exp1, exp2, ...")

@app.command()
@report_errors
def annotate(
    inputs: Annotated[list[str], typer.Argument(
        metavar="PATH", help="Images, folders (searched recursively) and videos.")],
    weights: WeightsOpt = None,
    boxes: Annotated[Path | None, typer.Option(
        "--boxes", help="COCO-style detections [{bbox, score, file_name or image_id}] as person boxes.")] = None,
    detector: DetectorOpt = None,
    detector_weights: DetectorWeightsOpt = None,
    person_threshold: PersonThresholdOpt = _C.person_threshold,
    max_people: MaxPeopleOpt = _C.max_people,
    detect_every: Annotated[int, typer.Option(
        "--detect-every", min=1,
        help="Video: run the detector every N frames (and whenever a person is lost).")] = _C.detect_every,
    save_boxes: Annotated[Path | None, typer.Option(
        "--save-boxes", help="Write the person boxes used (the detector's) in the --boxes format.")] = None,
    min_score: Annotated[float, typer.Option(
        "--min-score", help="Joints below are not drawn (faint below 2x).")] = _C.min_score,
    smooth: Annotated[bool, typer.Option("--smooth", help="One-Euro filter on video keypoints.")] = False,
    flip: FlipOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per model batch.")] = _C.batch_size,
    no_draw: Annotated[bool, typer.Option("--no-draw", help="Only write keypoints.json.")] = False,
    search: SearchOpt = _C.search_passes,
    stages: StagesOpt = None,
    device: DeviceOpt = Device.auto,
    runtime: RuntimeOpt = _C.runtime,
    precision: PrecisionOpt = _C.precision,
    out: AnnotateOutOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default: exp1, exp2, ...).")] = None,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Skeletons on images, folders and videos.

    Draws each person's skeleton on a copy of every input and writes keypoints.json."""
    set_threads(threads)
    from poser.annotate.run import annotate as run_annotate

    cfg = AnnotateConfig(inputs=inputs, weights=str(weights) if weights else None, device=device.value,
                         stages=stages, runtime=runtime.value, precision=precision.value,
                         out=str(out) if out else None, name=name, boxes=str(boxes) if boxes else None,
                         person_threshold=person_threshold, min_score=min_score, smooth=smooth, flip=flip,
                         batch_size=batch_size, draw=not no_draw, search_passes=search,
                         detector=detector, detector_weights=str(detector_weights) if detector_weights else None,
                         max_people=max_people, detect_every=detect_every,
                         save_boxes=str(save_boxes) if save_boxes else None)
    res = run_annotate(cfg)
    run = res.out
    fps = res.frames / res.seconds if res.seconds else 0.0
    results.print(f"annotated {res.frames} images/frames in {res.seconds:.1f} s ({fps:.1f}/s) -> {run} "
                  f"(keypoints.json{'' if no_draw else ' and annotated copies'})", soft_wrap=True)
    write_result(json_out, {"out": str(run), "frames": res.frames, "seconds": round(res.seconds, 2),
                           "failed": res.failed, "warnings": res.warnings})
    if res.failed:
        rest = f"; the others are in {run}" if res.records else ""
        raise PoserError(f"{len(res.failed)} input(s) failed (listed above){rest}")
