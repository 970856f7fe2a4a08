"""Training and evaluation loops. `fit` reads top to bottom: data, model, optimiser, resume,
then epochs of steps, each epoch ending with validation and checkpoints.

The same code runs on the CPU, one GPU, N GPUs (one process each, DDP over NCCL), N CPU
processes (DDP over gloo) and under torchrun; `distributed.init` is the only difference.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from poser.codec import MARGIN, MEAN, STD
from poser.console import log
from poser.data.cache import Cache, CacheDataset, CacheSpec, cache_dir
from poser.data.prepare import prepare_split
from poser.errors import PoserError
from poser.evaluate.run import evaluate_cache
from poser.inference.predictor import Predictor
from poser.models.deeppose import DeepPose, create_model
from poser.models.weights import save_model
from poser.runs import append_jsonl, read_jsonl, run_lock, tidy_run
from poser.skeletons import Skeleton, convert, get_skeleton
from poser.spec import ModelSpec, StageSpec
from poser.train import distributed
from poser.train.augment import Augment, make_batch
from poser.train.config import TrainConfig, check_config, loss_kind
from poser.train.distill import Teacher
from poser.train.folder import run_summary, start_run
from poser.train.losses import PoseLoss
from poser.train.plumbing import StopRequest, barrier, interrupted, loader_workers, replicas_identical, step_progress
from poser.train.stages import StageData, init_from, predict_previous, previous_stages, sample_crops
from poser.train.state import load_state, save_state
from poser.version import __version__


class Objective(nn.Module):
    """Model + loss as one module, so DDP synchronises the RLE flow's gradients too."""

    def __init__(self, model: DeepPose, loss: PoseLoss, distill: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__()
        self.model, self.loss, self.distill = model, loss, distill

    def forward(self, x, target, weight, visible, soft=None):
        return self.loss(self.model(x), target, weight, visible, soft, *self.distill)


def stage_spec(cfg: TrainConfig, skeleton, epoch: int, metrics: dict | None = None) -> StageSpec:
    """What eval and annotate need to rebuild and run the network from the weights file alone."""
    return StageSpec(
        backbone=cfg.backbone, skeleton=skeleton.name, joints=tuple(skeleton.joints), input_size=cfg.input_size,
        head=cfg.head, sigma_head=loss_kind(cfg) == "rle", margin=MARGIN, mean=MEAN, std=STD, stage=cfg.stage,
        sub_image=cfg.sub_image if cfg.stage > 1 else None, cache_size=cfg.cache_size, loss=loss_kind(cfg),
        epoch=epoch, metrics=metrics or {}, poser_version=__version__,
        trained_on={"data": cfg.data, "split": cfg.train_split, "epochs": cfg.epochs})


def fit(cfg: TrainConfig) -> dict | None:
    """Train in this process (one of possibly several); `cfg.resume` continues a run folder.
    Returns the summary on rank 0. The loop reads top to bottom: set up, then per epoch train,
    validate, save."""
    check_config(cfg)
    d = distributed.init(cfg.device)
    lock = run_lock(Path(cfg.resume)) if cfg.resume and d.is_main else contextlib.nullcontext()
    try:
        with lock:
            return _fit(cfg, d)
    finally:
        distributed.cleanup()


def _fit(cfg: TrainConfig, d: distributed.Dist) -> dict | None:
    """The loop: set up, then per epoch train, validate, save."""
    stop, bar = None, None
    try:
        t = setup(cfg, d)
        stop, bar = StopRequest(), step_progress() if d.is_main else None
        if bar:
            bar.start()
            log.info(f"run folder {t.run}  ({d.world} process(es) on {d.device}, {t.steps} steps/epoch, "
                          f"{len(t.train_ds)} train / {len(t.val_cache)} val instances)")
        for epoch in range(t.epoch, t.cfg.epochs):
            stats = train_one_epoch(t, epoch, bar, stop)
            replicas = replicas_identical(t.objective, d)
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
            barrier(d)
            if stop.agreed(d) and epoch + 1 < t.cfg.epochs:
                raise interrupted(t.run, f"the end of epoch {epoch + 1}")
        return run_summary(t.run) if d.is_main else None
    finally:
        if stop:
            stop.restore()
        if bar:
            bar.stop()


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
    teacher: Teacher | None = None      # --distill: its heatmaps are soft targets on every crop
    epoch: int = 0                      # where training (re)starts
    step: int = 0
    global_step: int = 0
    best: float = -1.0
    t0: float = 0.0                     # time counts across resumes
    loss_sum: float = 0.0               # the epoch's losses before a mid-epoch resume ...
    loss_steps: int = 0                 # ... so its train_loss is the whole epoch's

    @property
    def skeleton(self) -> Skeleton:
        """The model's joints (`cfg.skeleton`, else the data's)."""
        return get_skeleton(self.cfg.skeleton) if self.cfg.skeleton else self.train_ds.cache.skeleton

    @property
    def amp(self) -> tuple[bool, torch.dtype]:
        cuda = self.d.device.type == "cuda"
        dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float16
        return self.cfg.amp and cuda, dtype


def setup(cfg: TrainConfig, d: distributed.Dist) -> Trainer:
    """Data, cascade stages, model, optimiser and the run folder (new, or resumed from its
    saved state): one builder each."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    train_ds, val_cache, steps = build_data(cfg, d)
    prev, stage_data, aug = build_stages(cfg, d, train_ds)
    skeleton = get_skeleton(cfg.skeleton) if cfg.skeleton else train_ds.cache.skeleton
    objective, train_module = build_model(cfg, d, prev, skeleton, train_ds.cache.skeleton)
    teacher = build_teacher(cfg, d, skeleton)
    opt, sched, scaler = build_optimizer(cfg, d, objective, steps)
    if cfg.run is None and cfg.resume is None and d.is_main:
        cfg = start_run(cfg)
    run = Path(cfg.resume or cfg.run) if (cfg.resume or cfg.run) else None
    t = Trainer(cfg=cfg, d=d, train_ds=train_ds, val_cache=val_cache, steps=steps, prev=prev,
                stage_data=stage_data, aug=aug, objective=objective, train_module=train_module, opt=opt,
                sched=sched, scaler=scaler, run=run, teacher=teacher)
    if cfg.resume:
        try:
            restore(t, load_state(run / "last.state.safetensors"))
        except (RuntimeError, KeyError, ValueError, TypeError) as e:    # another run's state, another head
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise PoserError(f"`resume` {run}: its saved state does not fit its config.json ({first[:200]})") from None
        if d.is_main:
            tidy_run(run, t.epoch)
    done = read_jsonl(run / "metrics.jsonl") if d.is_main else []
    t.t0 = time.time() - (done[-1]["time"] if done else 0.0)
    return t


def build_data(cfg: TrainConfig, d: distributed.Dist) -> tuple[CacheDataset, Cache, int]:
    """The prepared caches (rank 0 builds them, the others wait) and the steps per epoch."""
    root, spec = Path(cfg.data), CacheSpec(size=cfg.cache_size)
    if d.is_main:
        for split in (cfg.train_split, cfg.val_split):
            if prepare_split(root, split, spec)["instances"] == 0:
                raise PoserError(f"{root}: split {split!r} has no person instances to train or validate on")
    barrier(d)
    train_ds = CacheDataset(cache_dir(root, cfg.train_split, spec))
    per_step = cfg.batch_size * d.world
    steps = len(train_ds) // per_step
    if steps == 0:
        raise PoserError(f"{len(train_ds)} training instances are fewer than one batch of {per_step}")
    return train_ds, Cache(cache_dir(root, cfg.val_split, spec)), min(steps, cfg.steps_per_epoch or steps)


def build_stages(cfg: TrainConfig, d: distributed.Dist, train_ds: CacheDataset) -> tuple[list, StageData | None,
                                                                                         Augment]:
    """A refinement stage: the frozen stages before it, their error statistics on the training
    set, and the augmentation its sub-images get (no half-body crops: they sit on joints)."""
    if cfg.stage == 1:
        return [], None, cfg.aug
    prev = previous_stages(cfg, d.device, train_ds.cache.skeleton)
    stage_data = predict_previous(prev, train_ds.cache, d.device, cfg.batch_size, d.is_main)
    return prev, stage_data, replace(cfg.aug, half_body=0.0)


def build_model(cfg: TrainConfig, d: distributed.Dist, prev: list, skeleton: Skeleton,
                data_skeleton: Skeleton) -> tuple[Objective, nn.Module]:
    """The network and its loss as one module, and that module as the processes train it."""
    kind = loss_kind(cfg)
    model = create_model(cfg.backbone, skeleton.num_joints, cfg.pretrained, sigma=kind == "rle", head=cfg.head,
                         joints=skeleton.joints)
    if prev and (prev[-1][1].backbone, prev[-1][1].head, prev[-1][1].sigma_head) == (
            cfg.backbone, cfg.head, kind == "rle"):
        # A refinement stage starts from the previous stage's weights (its own copy): it already
        # knows what joints look like and only has to learn to look closer.
        model.load_state_dict(prev[-1][0].state_dict())
    if cfg.init and not cfg.resume:
        init_from(model, cfg, skeleton)
    if cfg.backbone_lr == 0:
        # A linear probe: the head learns the dataset's joints on features left as they are (a new
        # head's first gradients would otherwise bend what a pretrained backbone knows; Kumar et
        # al. 2022, LP-FT), and the backbone's backward pass is skipped.
        model.backbone.requires_grad_(False)
    known = None if skeleton.name == data_skeleton.name else torch.tensor(
        [float(n in data_skeleton.joints) for n in skeleton.joints])
    objective = Objective(model, PoseLoss(kind, heatmap_weight=cfg.heatmap_weight, known=known),
                          (cfg.distill_weight, cfg.distill_labelled)).to(d.device)
    if cfg.channels_last:
        objective = objective.to(memory_format=torch.channels_last)
    cuda = d.device.type == "cuda"
    return objective, DDP(objective, device_ids=[d.local_rank] if cuda else None) if d.world > 1 else objective


def build_teacher(cfg: TrainConfig, d: distributed.Dist, skeleton: Skeleton) -> Teacher | None:
    """--distill: the frozen teacher, on the training device (no DDP: it has nothing to learn)."""
    if not cfg.distill:
        return None
    teacher = Teacher(cfg.distill, skeleton.joints, skip=tuple(cfg.distill_skip)).to(d.device)
    return teacher.to(memory_format=torch.channels_last) if cfg.channels_last else teacher


def build_optimizer(cfg: TrainConfig, d: distributed.Dist, objective: Objective, steps: int):
    """AdamW, linear warm-up then cosine, and the fp16 gradient scaler (off unless CUDA lacks bf16)."""
    groups = objective.parameters()
    if cfg.backbone_lr != 1.0:          # two groups only then: a saved run's optimiser state keeps fitting
        backbone = list(objective.model.backbone.parameters())
        ids = {id(p) for p in backbone}
        groups = [{"params": backbone, "lr": cfg.lr * cfg.backbone_lr},
                  {"params": [p for p in objective.parameters() if id(p) not in ids], "lr": cfg.lr}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(steps * cfg.epochs, int(cfg.warmup_epochs * steps)))
    cuda = d.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and cuda and not torch.cuda.is_bf16_supported())
    return opt, sched, scaler


def restore(t: Trainer, st: dict) -> None:
    """Continue exactly where the saved state stopped: weights, optimiser, schedule, RNG."""
    t.objective.load_state_dict(st["objective"])
    t.opt.load_state_dict(st["optimizer"])
    t.sched.load_state_dict(st["scheduler"])
    t.scaler.load_state_dict(st["scaler"])
    t.epoch, t.step, t.global_step, t.best = st["epoch"], st["step"], st["global_step"], st["best"]
    t.loss_sum, t.loss_steps = float(st.get("loss_sum", 0.0)), int(st.get("loss_steps", 0))
    torch.set_rng_state(st["rng"]["torch"])
    if t.d.device.type == "cuda" and st["rng"].get("cuda"):
        torch.cuda.set_rng_state_all(st["rng"]["cuda"])


def _warmup_cosine(total: int, warm: int):
    """Learning-rate factor per step: linear warm-up, then cosine down to 1% of the peak."""
    warm = max(1, warm)

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, total - warm))))
    return factor


def train_one_epoch(t: Trainer, epoch: int, bar: Progress | None, stop: StopRequest) -> dict:
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
    if cfg.backbone_lr == 0:
        t.objective.model.backbone.eval()     # a probe's backbone keeps its batch-norm statistics too
    task = bar.add_task(f"epoch {epoch + 1}/{cfg.epochs}", total=t.steps, completed=t.step, info="") if bar else None
    losses, t_epoch, seen, info = [], time.time(), 0, ""
    cache = t.train_ds.cache
    for i, (img, kp, idx) in enumerate(loader, start=t.step):
        rng = np.random.default_rng([cfg.seed, epoch, i, d.rank])
        kp_np, idx_np = convert(kp.numpy(), cache.skeleton, t.skeleton), idx.numpy()
        if t.stage_data is None:
            boxes, mask, photos = cache.boxes[idx_np], None, cache.photos[idx_np]
        else:       # sub-images are placed around joints
            boxes, mask = sample_crops(t.stage_data, idx_np, kp_np, cfg.sub_image, MARGIN, rng)
            photos = None
        b = make_batch(img.to(dev, non_blocking=True), boxes, kp_np, cfg.input_size, t.skeleton, t.aug, rng,
                       cfg.channels_last, joint_mask=mask, photos=photos)
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp):
            soft = t.teacher(b["x"]) if t.teacher is not None else None
            loss, _ = t.train_module(b["x"], b["target"], b["weight"], b["visible"], soft)
        t.opt.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        t.scaler.unscale_(t.opt)
        norm = torch.nn.utils.clip_grad_norm_(t.objective.parameters(), cfg.grad_clip)
        if not torch.isfinite(norm) and not t.scaler.is_enabled():  # the same on every rank (all-reduced)
            raise PoserError(f"loss became NaN/inf at epoch {epoch + 1}, step {i + 1}; stopped. "
                             f"{_last_good(t)}(try a lower `lr`)")
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
            t.loss_sum, t.loss_steps = t.loss_sum + float(torch.stack(losses).sum()), t.loss_steps + len(losses)
            save_checkpoint(t, epoch, i + 1)
            raise interrupted(t.run, f"epoch {epoch + 1}, step {i + 1}")
    n = t.loss_steps + len(losses)
    mean = (t.loss_sum + float(torch.stack(losses).sum())) / n if losses else float("nan")
    t.step, t.loss_sum, t.loss_steps = 0, 0.0, 0
    return {"train_loss": mean, "samples_per_s": round(seen / max(1e-9, time.time() - t_epoch), 1)}


def _last_good(t: Trainer) -> str:
    if t.run is not None and (t.run / "last.safetensors").is_file():
        return f"The last good weights are in {t.run / 'last.safetensors'} "
    return "No epoch finished yet, so there are no weights to keep "


def validate(t: Trainer, epoch: int) -> dict:
    """Rank 0: PCP / PDJ on the validation cache with every stage so far (the one validation
    path, `evaluate_cache`, which poser eval uses too)."""
    now = (t.objective.model, stage_spec(t.cfg, t.skeleton, epoch + 1))
    predictor = Predictor(list(t.prev) + [now], t.d.device, t.cfg.channels_last)
    limit = t.cfg.val_batches * t.cfg.batch_size if t.cfg.val_batches else None
    _, m = evaluate_cache(predictor, t.val_cache, batch_size=t.cfg.batch_size, limit=limit)
    return {"epoch": epoch + 1, "step": t.global_step, "val_pcp": m["pcp"]["mean"], "val_pdj@0.2": m["pdj"]["at_0.2"],
            "val_pdj@0.1": m["pdj"]["at_0.1"], "lr": t.sched.get_last_lr()[0]}


def save_weights_files(t: Trainer, epoch: int, record: dict) -> None:
    """Rank 0: metrics.jsonl, last.safetensors and (when val PDJ@0.2 improves) best.safetensors."""
    append_jsonl(t.run / "metrics.jsonl", record)
    now = stage_spec(t.cfg, t.skeleton, epoch + 1, {k: record[k] for k in ("val_pcp", "val_pdj@0.2")})
    spec = ModelSpec(tuple(s for _, s in t.prev) + (now,))
    states = [m.state_dict() for m, _ in t.prev] + [t.objective.model.state_dict()]
    save_model(t.run / "last.safetensors", states, spec)
    if record["val_pdj@0.2"] > t.best or not (t.run / "best.safetensors").exists():
        t.best = max(t.best, record["val_pdj@0.2"])
        save_model(t.run / "best.safetensors", states, spec)


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
        "best": t.best, "rng": rng, "loss_sum": t.loss_sum, "loss_steps": t.loss_steps,
    })


