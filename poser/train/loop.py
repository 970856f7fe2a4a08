"""Training and evaluation loops. `fit` reads top to bottom: data, model, optimiser, resume,
then epochs of steps, each epoch ending with validation and checkpoints.

The same code runs on the CPU, one GPU, N GPUs (one process each, DDP over NCCL), N CPU
processes (DDP over gloo) and under torchrun; `distributed.init` is the only difference.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from poser import __version__
from poser.codec import MARGIN, MEAN, STD
from poser.console import RateColumn, log, progress
from poser.data.augment import Augment, make_batch
from poser.data.cache import Cache, CacheDataset, CacheSpec, cache_dir
from poser.data.prepare import prepare_split
from poser.errors import PoserError
from poser.evaluate.run import evaluate_cache
from poser.inference.cascade import SUB_IMAGE, StageData, error_statistics, sample_crops
from poser.inference.predictor import Predictor
from poser.models.backbones import BACKBONES
from poser.models.deeppose import DeepPose, create_model, load_stages
from poser.models.heads import HEADS
from poser.models.weights import load_state, read_meta, save_bundle, save_state
from poser.runs import append_jsonl, new_run_dir, read_jsonl, save_config
from poser.train import distributed
from poser.train.losses import HEATMAP_WEIGHT, LOSSES, PoseLoss


@dataclass
class TrainConfig:
    data: str = "data/coco"
    out: str = "runs/train"
    name: str | None = None
    backbone: str = "resnet18"
    input_size: int = 224
    head: str = "integral"              # fc (DeepPose's: global pool + linear) or integral (heatmap soft-argmax)
    loss: str = "auto"                  # l2 (DeepPose's), l1, smooth_l1, rle; auto: rle for fc, l1 for integral
    heatmap_weight: float = HEATMAP_WEIGHT   # integral head: weight of the dense heatmap (KL) term
    pretrained: str | None = None       # 'imagenet' or a local weights file
    init: str | None = None             # a poser weights file whose stage one starts the whole model (fine-tune)
    epochs: int = 90
    batch_size: int = 64                # per process
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    grad_clip: float = 5.0
    steps_per_epoch: int | None = None  # cap, for quick runs
    workers: int | None = None          # loader processes per training process; None: auto
    device: str = "auto"
    amp: bool = True                    # CUDA only: bf16 where supported, else fp16 + GradScaler
    channels_last: bool = True
    seed: int = 0
    cache_size: int = 256
    train_split: str = "train"
    val_split: str = "val"
    val_batches: int | None = None      # cap on validation batches
    aug: Augment = field(default_factory=Augment)
    resume: str | None = None
    run: str | None = None              # the run folder, once created
    stage: int = 1                      # 2, 3, ...: a refinement stage of the cascade ...
    from_run: str | None = None         # ... on top of this run folder / weights file (stages 1..stage-1)
    sub_image: float = SUB_IMAGE        # refinement sub-image side, x torso diameter

    @staticmethod
    def from_dict(d: dict) -> TrainConfig:
        d = dict(d)
        d["aug"] = Augment(**d.get("aug", {}))
        known = TrainConfig.__dataclass_fields__
        return TrainConfig(**{k: v for k, v in d.items() if k in known})


class Objective(nn.Module):
    """Model + loss as one module, so DDP synchronises the RLE flow's gradients too."""

    def __init__(self, model: DeepPose, loss: PoseLoss) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, x, target, weight, visible):
        return self.loss(self.model(x), target, weight, visible)


def weights_meta(cfg: TrainConfig, skeleton, epoch: int, metrics: dict | None = None) -> dict:
    """What eval and annotate need to rebuild and run the model from the weights file alone."""
    return {
        "skeleton": skeleton.name, "joints": list(skeleton.joints), "backbone": cfg.backbone,
        "input_size": cfg.input_size, "margin": MARGIN, "mean": list(MEAN), "std": list(STD),
        "stage": cfg.stage, "head": cfg.head, "loss": loss_kind(cfg), "sigma_head": loss_kind(cfg) == "rle",
        "epoch": epoch, "cache_size": cfg.cache_size,
        "sub_image": cfg.sub_image if cfg.stage > 1 else None,
        "poser_version": __version__, "metrics": metrics or {},
        "trained_on": {"data": cfg.data, "split": cfg.train_split, "epochs": cfg.epochs},
    }


def loss_kind(cfg: TrainConfig) -> str:
    """The coordinate loss: as asked, or by head (RLE for fc, L1 for integral: measured best)."""
    if cfg.loss != "auto":
        return cfg.loss
    return "rle" if cfg.head == "fc" else "l1"


def stage_weights(from_run: str | Path, stage: int) -> Path:
    """The weights file of stages 1..stage-1: `from_run` itself, or its best.safetensors."""
    path = Path(from_run)
    weights = path / "best.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise PoserError(f"--from {path}: no stage-{stage - 1} model there (expected {weights})")
    return weights


def stage_architecture(from_run: str | Path, stage: int) -> dict:
    """Backbone and input size of stage one, which refinement stages copy by default."""
    meta = read_meta(stage_weights(from_run, stage))
    first = meta.get("stages", [meta])[0]
    return {"backbone": first["backbone"], "input_size": first["input_size"], "head": first.get("head", "fc")}


def previous_stages(cfg: TrainConfig, device: torch.device, skeleton) -> list[tuple[DeepPose, dict]]:
    """Stages 1..stage-1 that a refinement stage trains on top of (from --from)."""
    path = Path(cfg.from_run)
    stages = load_stages(stage_weights(path, cfg.stage), device)
    if len(stages) != cfg.stage - 1:
        raise PoserError(f"--from {path} holds a {len(stages)}-stage model; --stage {cfg.stage} builds on "
                         f"{cfg.stage - 1} stage(s)")
    if stages[0][1]["skeleton"] != skeleton.name:
        raise PoserError(f"--from {path} predicts {stages[0][1]['skeleton']} joints, the data is {skeleton.name}")
    for m, _ in stages:
        m.requires_grad_(False)
    return stages


def init_from(model: DeepPose, cfg: TrainConfig, skeleton) -> None:
    """Fine-tuning: start the whole model (backbone and head) from stage one of a poser weights
    file of the same backbone, head and joints; the input size may differ (the network is
    convolutional and the head's heatmap follows the input)."""
    src, meta = load_stages(Path(cfg.init), "cpu", 1)[0]
    want = {"backbone": cfg.backbone, "head": cfg.head, "skeleton": skeleton.name,
            "sigma_head": loss_kind(cfg) == "rle"}
    have = {"backbone": meta["backbone"], "head": meta.get("head", "fc"), "skeleton": meta["skeleton"],
            "sigma_head": bool(meta.get("sigma_head"))}
    diff = [f"{k} {have[k]} (this run: {want[k]})" for k in want if have[k] != want[k]]
    if diff:
        raise PoserError(f"--init {cfg.init} does not fit this run: {', '.join(diff)}")
    model.load_state_dict(src.state_dict())


def _stage_data(prev: list, cache: Cache, device: torch.device, batch_size: int, show: bool) -> StageData:
    """Run stages 1..s-1 over the training set once: their real predictions and the
    statistics of their errors, from which stage s draws its training sub-images."""
    predictor = Predictor(*prev[0], device, refiners=prev[1:])
    with progress("instances") as bar:
        task = bar.add_task(f"stage 1-{len(prev)} on train", total=len(cache), visible=show)
        p = predictor.predict_cache(cache, batch_size=batch_size, progress=lambda k: bar.advance(task, k))
    return error_statistics(p["coords"], cache.keypoints, cache.skeleton)


def loader_workers(requested: int | None, d: distributed.Dist) -> int:
    """Loader processes for this training process. On the CPU, none: decoding a cached crop
    costs ~2% of a training step there (`poser bench`), and worker processes would only
    contend for the cores the step uses. On GPUs, the CPU cores shared among the local ranks."""
    if requested is not None:
        return requested
    if d.device.type == "cpu":
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", d.world))
    return max(1, min(8, (os.cpu_count() or 2) // local - 1))


def check_config(cfg: TrainConfig) -> None:
    """Fail in a second on options that would otherwise fail after the data is prepared."""
    if cfg.backbone not in BACKBONES:
        raise PoserError(f"unknown backbone {cfg.backbone!r} (known: {', '.join(BACKBONES)})")
    if cfg.loss not in LOSSES + ("auto",):
        raise PoserError(f"unknown loss {cfg.loss!r} (known: auto, {', '.join(LOSSES)})")
    if cfg.head not in HEADS:
        raise PoserError(f"unknown head {cfg.head!r} (known: {', '.join(HEADS)})")
    if cfg.head != "fc" and loss_kind(cfg) == "rle":
        raise PoserError("--loss rle needs the fc head's sigma output; the integral head trains with l1, "
                         "smooth_l1 or l2 (plus its heatmap term)")
    if cfg.pretrained and cfg.pretrained != "imagenet" and not Path(cfg.pretrained).is_file():
        raise PoserError(f"--pretrained {cfg.pretrained}: no such file (use 'imagenet' or a weights file)")
    if cfg.init and not Path(cfg.init).is_file():
        raise PoserError(f"--init {cfg.init}: no such weights file")
    if cfg.init and cfg.stage > 1:
        raise PoserError("--init starts a stage-one model; a refinement stage starts from --from's last stage")
    if cfg.stage > 1 and not cfg.from_run:
        raise PoserError(f"--stage {cfg.stage} needs --from: the run folder (or weights file) of stages "
                         f"1..{cfg.stage - 1}")
    if not Path(cfg.data).is_dir():
        raise PoserError(f"--data {cfg.data}: no such folder (make one with poser fetch-coco, fetch-lsp or synth)")


def fit(cfg: TrainConfig) -> dict | None:
    """Train in this process (one of possibly several); `cfg.resume` continues a run folder.
    Returns the summary on rank 0. The loop reads top to bottom: set up, then per epoch train,
    validate, save."""
    check_config(cfg)
    d = distributed.init(cfg.device)
    stop, bar = None, None
    try:
        t = setup(cfg, d)
        stop, bar = _StopRequest(), _progress() if d.is_main else None
        if bar:
            bar.start()
            log.info(f"run folder {t.run}  ({d.world} process(es) on {d.device}, {t.steps} steps/epoch, "
                          f"{len(t.train_ds)} train / {len(t.val_cache)} val instances)")
        for epoch in range(t.epoch, t.cfg.epochs):
            stats = train_one_epoch(t, epoch, bar, stop)
            replicas = _replicas_identical(t.objective, d)
            if d.is_main:
                record = validate(t, epoch) | stats | {"time": round(time.time() - t.t0, 1)}
                if replicas is not None:
                    record["replicas_identical"] = replicas
                    if not replicas:
                        log.warning("the DDP replicas' parameters differ")
                save_weights_files(t, epoch, record)
                log.info(f"epoch {epoch + 1}: loss {record['train_loss']:.4f}  val PCP {record['val_pcp']:.3f}  "
                              f"PDJ@0.2 {record['val_pdj@0.2']:.3f}  {record['samples_per_s']:.1f} samples/s")
            save_checkpoint(t, epoch + 1, 0)
            _barrier(d)
            if stop.agreed(d) and epoch + 1 < t.cfg.epochs:
                raise _interrupted(t.run, f"the end of epoch {epoch + 1}")
        return run_summary(t.run) if d.is_main else None
    finally:
        if stop:
            stop.restore()
        if bar:
            bar.stop()
        distributed.cleanup()


@dataclass
class Trainer:
    """One training process: what `setup` builds and the loop advances."""

    cfg: TrainConfig
    d: distributed.Dist
    train_ds: CacheDataset
    val_cache: Cache
    steps: int                          # per epoch
    prev: list                          # stages 1..s-1 (frozen) for a refinement stage
    stage_data: StageData | None
    aug: Augment
    objective: Objective
    train_module: nn.Module             # the objective, DDP-wrapped when there are several processes
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    run: Path | None                    # None on ranks > 0 under torchrun
    epoch: int = 0                      # where training (re)starts
    step: int = 0
    global_step: int = 0
    best: float = -1.0
    t0: float = 0.0                     # time counts across resumes

    @property
    def skeleton(self):
        return self.train_ds.cache.skeleton

    @property
    def amp(self) -> tuple[bool, torch.dtype]:
        cuda = self.d.device.type == "cuda"
        dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
        return self.cfg.amp and cuda, dtype


def setup(cfg: TrainConfig, d: distributed.Dist) -> Trainer:
    """Data (prepared caches: rank 0 builds them, the others wait), model, loss, optimiser,
    schedule, precision, and the run folder (new, or resumed from its saved state)."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    dev = d.device
    root, spec = Path(cfg.data), CacheSpec(size=cfg.cache_size)
    if d.is_main:
        for split in (cfg.train_split, cfg.val_split):
            if prepare_split(root, split, spec)["instances"] == 0:
                raise PoserError(f"{root}: split {split!r} has no person instances to train or validate on")
    _barrier(d)
    train_ds = CacheDataset(cache_dir(root, cfg.train_split, spec))
    skeleton = train_ds.cache.skeleton
    per_step = cfg.batch_size * d.world
    steps = len(train_ds) // per_step
    if steps == 0:
        raise PoserError(f"{len(train_ds)} training instances are fewer than one batch of {per_step}")
    steps = min(steps, cfg.steps_per_epoch or steps)
    prev, stage_data, aug = [], None, cfg.aug
    if cfg.stage > 1:
        prev = previous_stages(cfg, dev, skeleton)
        stage_data = _stage_data(prev, train_ds.cache, dev, cfg.batch_size, d.is_main)
        aug = replace(cfg.aug, half_body=0.0)    # sub-images are placed around joints, not bodies

    kind = loss_kind(cfg)
    model = create_model(cfg.backbone, skeleton.num_joints, cfg.pretrained, sigma=kind == "rle", head=cfg.head)
    last = prev[-1][1] if prev else {}
    if prev and (last["backbone"], last.get("head", "fc"), bool(last.get("sigma_head"))) == (
            cfg.backbone, cfg.head, kind == "rle"):
        # A refinement stage starts from the previous stage's weights (its own copy): it already
        # knows what joints look like and only has to learn to look closer.
        model.load_state_dict(prev[-1][0].state_dict())
    if cfg.init and not cfg.resume:
        init_from(model, cfg, skeleton)
    objective = Objective(model, PoseLoss(kind, heatmap_weight=cfg.heatmap_weight)).to(dev)
    if cfg.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    cuda = dev.type == "cuda"
    train_module = DDP(objective, device_ids=[d.local_rank] if cuda else None) if d.world > 1 else objective
    opt = torch.optim.AdamW(objective.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(steps * cfg.epochs, int(cfg.warmup_epochs * steps)))
    amp = cfg.amp and cuda
    scaler = torch.amp.GradScaler("cuda", enabled=amp and not (cuda and torch.cuda.is_bf16_supported()))

    if cfg.run is None and cfg.resume is None and d.is_main:
        cfg = start_run(cfg)
    run = Path(cfg.resume or cfg.run) if (cfg.resume or cfg.run) else None
    t = Trainer(cfg, d, train_ds, Cache(cache_dir(root, cfg.val_split, spec)), steps, prev, stage_data, aug,
                objective, train_module, opt, sched, scaler, run)
    if cfg.resume:
        st = load_state(run / "last.state.safetensors")
        objective.load_state_dict(st["objective"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        scaler.load_state_dict(st["scaler"])
        t.epoch, t.step, t.global_step, t.best = st["epoch"], st["step"], st["global_step"], st["best"]
        torch.set_rng_state(st["rng"]["torch"])
        if cuda and st["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(st["rng"]["cuda"])
    done = read_jsonl(run / "metrics.jsonl") if d.is_main else []
    t.t0 = time.time() - (done[-1]["time"] if done else 0.0)
    return t


def _warmup_cosine(total: int, warm: int):
    """Learning-rate factor per step: linear warm-up, then cosine down to 1% of the peak."""
    warm = max(1, warm)

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, total - warm))))
    return factor


def train_one_epoch(t: Trainer, epoch: int, bar: Progress | None, stop: _StopRequest) -> dict:
    """One epoch of steps (from `t.step` when resuming mid-epoch); returns the mean training
    loss and samples/s. A stop request saves the state and raises after the current step."""
    cfg, d, dev = t.cfg, t.d, t.d.device
    amp, amp_dtype = t.amp
    sampler = DistributedSampler(t.train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    sampler.set_epoch(epoch)
    order = list(sampler)[t.step * cfg.batch_size: t.steps * cfg.batch_size]      # resume mid-epoch
    loader = DataLoader(t.train_ds, batch_size=cfg.batch_size, sampler=order,
                        num_workers=loader_workers(cfg.workers, d), pin_memory=dev.type == "cuda", drop_last=True,
                        persistent_workers=False,
                        generator=torch.Generator().manual_seed(cfg.seed + epoch))
    t.objective.train()
    task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=t.steps, completed=t.step, info="") if bar else None
    losses, t_epoch, seen, info = [], time.time(), 0, ""
    cache = t.train_ds.cache
    for i, (img, kp, idx) in enumerate(loader, start=t.step):
        rng = np.random.default_rng([cfg.seed, epoch, i, d.rank])
        kp_np, idx_np = kp.numpy(), idx.numpy()
        if t.stage_data is None:
            boxes, mask, photos = cache.boxes[idx_np], None, cache.photos[idx_np]
        else:       # sub-images are placed around joints
            boxes, mask = sample_crops(t.stage_data, idx_np, kp_np, cfg.sub_image, MARGIN, rng)
            photos = None
        b = make_batch(img.to(dev, non_blocking=True), boxes, kp_np, cfg.input_size, t.skeleton, t.aug, rng,
                       cfg.channels_last, joint_mask=mask, photos=photos)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            loss, _ = t.train_module(b["x"], b["target"], b["weight"], b["visible"])
        t.opt.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        t.scaler.unscale_(t.opt)
        norm = torch.nn.utils.clip_grad_norm_(t.objective.parameters(), cfg.grad_clip)
        if not torch.isfinite(norm) and not t.scaler.is_enabled():  # the same on every rank (all-reduced)
            raise PoserError(f"loss became NaN/inf at epoch {epoch + 1}, step {i + 1}; stopped. "
                             f"{_last_good(t)}(try a lower --lr)")
        t.scaler.step(t.opt)               # skipped by the scaler on inf/NaN fp16 gradients
        t.scaler.update()
        t.sched.step()
        t.global_step += 1
        seen += len(idx) * d.world
        losses.append(loss.detach())       # no float(): a host sync per step would stall CUDA
        if bar:
            if i % 10 == 0 or i == t.steps - 1:
                info = f"loss {float(losses[-1]):.4f}  lr {t.sched.get_last_lr()[0]:.2e}"
            bar.update(task, advance=1, info=info)
        if stop.agreed(d):
            save_checkpoint(t, epoch, i + 1)
            raise _interrupted(t.run, f"epoch {epoch + 1}, step {i + 1}")
    t.step = 0
    return {"train_loss": float(torch.stack(losses).mean()) if losses else float("nan"),
            "samples_per_s": round(seen / max(1e-9, time.time() - t_epoch), 1)}


def _last_good(t: Trainer) -> str:
    if t.run is not None and (t.run / "last.safetensors").is_file():
        return f"The last good weights are in {t.run / 'last.safetensors'} "
    return "No epoch finished yet, so there are no weights to keep "


def validate(t: Trainer, epoch: int) -> dict:
    """Rank 0: PCP / PDJ on the validation cache with every stage so far (the one validation
    path, `evaluate_cache`, which poser eval uses too)."""
    now = (t.objective.model, weights_meta(t.cfg, t.skeleton, epoch + 1))
    stages = list(t.prev) + [now]
    predictor = Predictor(*stages[0], t.d.device, t.cfg.channels_last, refiners=stages[1:])
    limit = t.cfg.val_batches * t.cfg.batch_size if t.cfg.val_batches else None
    _, m = evaluate_cache(predictor, t.val_cache, batch_size=t.cfg.batch_size, limit=limit)
    return {"epoch": epoch + 1, "step": t.global_step, "val_pcp": m["pcp"]["mean"], "val_pdj@0.2": m["pdj"]["at_0.2"],
            "val_pdj@0.1": m["pdj"]["at_0.1"], "lr": t.sched.get_last_lr()[0]}


def save_weights_files(t: Trainer, epoch: int, record: dict) -> None:
    """Rank 0: metrics.jsonl, last.safetensors and (when val PDJ@0.2 improves) best.safetensors."""
    append_jsonl(t.run / "metrics.jsonl", record)
    meta = weights_meta(t.cfg, t.skeleton, epoch + 1, {k: record[k] for k in ("val_pcp", "val_pdj@0.2")})
    bundle = [(m.state_dict(), mt) for m, mt in t.prev] + [(t.objective.model.state_dict(), meta)]
    save_bundle(t.run / "last.safetensors", bundle)
    if record["val_pdj@0.2"] > t.best or not (t.run / "best.safetensors").exists():
        t.best = max(t.best, record["val_pdj@0.2"])
        save_bundle(t.run / "best.safetensors", bundle)


def save_checkpoint(t: Trainer, epoch: int, step: int) -> None:
    """Rank 0: everything needed to continue bit-identically (--resume)."""
    if not t.d.is_main:
        return
    rng = {"torch": torch.get_rng_state()}
    if t.d.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    save_state(t.run / "last.state.safetensors", {
        "objective": t.objective.state_dict(), "optimizer": t.opt.state_dict(), "scheduler": t.sched.state_dict(),
        "scaler": t.scaler.state_dict(), "epoch": epoch, "step": step, "global_step": t.global_step,
        "best": t.best, "rng": rng,
    })


class _StopRequest:
    """Ctrl-C / SIGTERM set a flag; the loop stops at the end of the step, on all ranks alike."""

    def __init__(self) -> None:
        self.flag, self.old = False, {}
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self.old[s] = signal.signal(s, self._set)

    def _set(self, *_):
        if self.flag:               # a second Ctrl-C: stop now, without saving
            raise KeyboardInterrupt
        self.flag = True
        if threading.current_thread() is threading.main_thread():
            log.warning("stopping after this step (state will be saved); Ctrl-C again to abort")

    def agreed(self, d: distributed.Dist) -> bool:
        if d.world == 1:
            return self.flag
        t = torch.tensor([1.0 if self.flag else 0.0], device=d.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def restore(self) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)


def _replicas_identical(module: nn.Module, d: distributed.Dist) -> bool | None:
    """Under DDP, whether every rank holds bit-identical parameters (None for one process).
    BatchNorm running statistics are left out: DDP re-broadcasts them from rank 0 at each
    forward, so between steps each rank legitimately holds its own."""
    if d.world == 1:
        return None
    h = hashlib.sha1()
    for p in module.parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())
    digests: list = [None] * d.world
    dist.all_gather_object(digests, h.hexdigest())
    return len(set(digests)) == 1


def _interrupted(run: Path | None, where: str) -> PoserError:
    return PoserError(f"interrupted at {where}: state saved; continue with 'poser train --resume {run}'",
                      exit_code=130)


def _barrier(d: distributed.Dist) -> None:
    if d.world > 1:
        dist.barrier()


def _progress() -> Progress:
    return progress("steps", (BarColumn(), MofNCompleteColumn(), RateColumn("steps"), TextColumn("{task.fields[info]}"),
                              TimeRemainingColumn()))


def start_run(cfg: TrainConfig) -> TrainConfig:
    """Create the run folder (next free name) with its config.json; `cfg.run` names it."""
    run = new_run_dir(Path(cfg.out), cfg.name)
    cfg = replace(cfg, run=str(run))
    save_config(run, asdict(cfg))
    return cfg


def resume(run: str | Path, epochs: int | None = None, **where) -> dict | None:
    """Continue a run folder where it stopped (Ctrl-C, SIGTERM, a crash after a checkpoint), in
    one call: `engine.resume("runs/train/exp1", epochs=60)`. See `resume_run`."""
    return fit(resume_run(Path(run), epochs, **where))


def resume_run(run: Path, epochs: int | None = None, device: str | None = None,
               workers: int | None = None) -> TrainConfig:
    """The config to continue `run` with: its own config.json, where only the schedule's length
    and the place it runs may change. `epochs` sets a new total (more or fewer than planned,
    but beyond the epochs done); config.json then records it, as the schedule now followed.
    `device` and `workers` (None: as before) apply to this continuation only."""
    cfg_file = run / "config.json"
    if not cfg_file.is_file() or not (run / "last.state.safetensors").is_file():
        raise PoserError(f"--resume {run}: not a run folder with a saved state")
    cfg = TrainConfig.from_dict(json.loads(cfg_file.read_text()))
    done = len(read_jsonl(run / "metrics.jsonl"))
    if (epochs or cfg.epochs) <= done:
        raise PoserError(f"--resume {run}: {done} epochs are already done; pass a larger --epochs")
    if epochs is not None and epochs != cfg.epochs:
        cfg = replace(cfg, epochs=epochs)
        save_config(run, asdict(cfg))
    where = {k: v for k, v in (("device", device), ("workers", workers)) if v is not None}
    return replace(cfg, resume=str(run), **where)


def run_summary(run: Path) -> dict:
    """Best and last epoch of a run folder, from its metrics.jsonl."""
    rows = read_jsonl(Path(run) / "metrics.jsonl")
    if not rows:
        raise PoserError(f"{run}: no finished epoch yet")
    best = max(rows, key=lambda r: r["val_pdj@0.2"])
    return {"run": str(run), "best": best, "last": rows[-1], "seconds": rows[-1]["time"],
            "weights": {"best": str(run / "best.safetensors"), "last": str(run / "last.safetensors")}}


def summary_table(summary: dict) -> Table:
    best, last = summary["best"], summary["last"]
    t = Table("epochs", "best epoch", "val PCP", "val PDJ@0.2", "samples/s", "time", title=f"trained: {summary['run']}")
    t.add_row(str(last["epoch"]), str(best["epoch"]), f"{best['val_pcp']:.3f}", f"{best['val_pdj@0.2']:.3f}",
              f"{last['samples_per_s']:.1f}", f"{summary['seconds'] / 60:.1f} min")
    return t
