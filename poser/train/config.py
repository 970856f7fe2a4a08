"""`TrainConfig`: one training run's settings, saved as the run's config.json (the defaults
the command line shows are these), and the checks that fail in a second on a bad one."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from poser.codec import HEADS
from poser.errors import PoserError
from poser.inference.cascade import SUB_IMAGE
from poser.models.backbones import BACKBONES
from poser.runs import check_run_name
from poser.skeletons import SKELETONS
from poser.train.augment import Augment
from poser.train.distill import TEACHERS
from poser.train.losses import HEATMAP_WEIGHT, LOSSES


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
    skeleton: str | None = None         # the model's joints; None: the data's. Joints the data lacks get no loss
    distill: str | None = None          # a teacher (blazepose_lite/full/heavy, MediaPipe's weights) ...
    distill_weight: float = 0.2         # ... whose heatmaps the model's follow: weight of that KL term,
    distill_labelled: float = 0.25      # x this for joints the crop labels (their label teaches them)
    distill_skip: tuple[str, ...] = ()  # joints it does not teach: where its convention and the labels'
                                        # differ (BlazePose's hips sit higher than LSP's)
    epochs: int = 90
    batch_size: int = 64                # per process
    lr: float = 1e-3
    backbone_lr: float = 1.0            # the backbone's learning rate, x lr: below 1 keeps what it knows; 0 freezes it
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
    threads: int | None = None          # CPU threads of torch, recorded at the start: a resume reuses them
    workdir: str | None = None          # the working directory at the start: a resume reads relative paths from it

    @staticmethod
    def from_dict(d: dict) -> TrainConfig:
        """A config from JSON; a value of the wrong type (`"batch_size": "eight"`) is a PoserError
        naming the field, not a traceback later."""
        d = dict(d)
        aug = d.get("aug", {})
        if not isinstance(aug, dict):
            raise PoserError(f"aug: expected an object, got {aug!r}")
        d["aug"] = Augment(**_typed(Augment, aug))
        return TrainConfig(**_typed(TrainConfig, {k: v for k, v in d.items() if k != "aug"}) | {"aug": d["aug"]})

    def relative_to_start(self) -> TrainConfig:
        """Relative paths (data, init, pretrained, from_run) read from the working directory the
        run started in, whatever the current one: a resume from elsewhere trains on the same data."""
        if not self.workdir:
            return self
        def fix(p: str | None) -> str | None:
            if p is None or p in ("imagenet", "mediapipe") or Path(p).is_absolute():
                return p
            return str(Path(self.workdir) / p)
        return replace(self, data=fix(self.data), init=fix(self.init), pretrained=fix(self.pretrained),
                       from_run=fix(self.from_run))


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def _typed(cls, d: dict) -> dict:
    """The entries of `d` that are fields of `cls`, each checked against the field's annotation."""
    out = {}
    for k, v in d.items():
        f = cls.__dataclass_fields__.get(k)
        if f is None:
            continue
        kinds = [t.strip() for t in (f.type if isinstance(f.type, str) else f.type.__name__).split("|")]
        ok = (v is None and "None" in kinds) or any(
            isinstance(v, _TYPES[t]) and not (t != "bool" and isinstance(v, bool)) for t in kinds if t in _TYPES)
        if not ok and any(t in _TYPES for t in kinds):
            raise PoserError(f"{k}: expected {f.type}, got {v!r}")
        out[k] = v
    return out


def loss_kind(cfg: TrainConfig) -> str:
    """The coordinate loss: as asked, or by head (RLE for fc, L1 for integral: measured best)."""
    if cfg.loss != "auto":
        return cfg.loss
    return "rle" if cfg.head == "fc" else "l1"


def check_config(cfg: TrainConfig) -> None:
    """Fail in a second on options that would otherwise fail after the data is prepared."""
    if cfg.backbone not in BACKBONES:
        raise PoserError(f"unknown backbone {cfg.backbone!r} (known: {', '.join(BACKBONES)})")
    if cfg.loss not in LOSSES + ("auto",):
        raise PoserError(f"unknown loss {cfg.loss!r} (known: auto, {', '.join(LOSSES)})")
    if cfg.head not in HEADS:
        raise PoserError(f"unknown head {cfg.head!r} (known: {', '.join(HEADS)})")
    if cfg.backbone.startswith("blazepose") and cfg.head != "integral":
        raise PoserError(f"`backbone` {cfg.backbone} takes `head` integral (BlazePose's own heatmaps)")
    if cfg.head != "fc" and loss_kind(cfg) == "rle":
        raise PoserError("`loss` rle needs the fc head's sigma output; the integral head trains with l1, "
                         "smooth_l1 or l2 (plus its heatmap term)")
    if cfg.pretrained and cfg.pretrained not in ("imagenet", "mediapipe") and not Path(cfg.pretrained).is_file():
        raise PoserError(f"`pretrained` {cfg.pretrained}: no such file (use 'imagenet', 'mediapipe' for the "
                         "blazepose backbones, or a weights file)")
    if cfg.skeleton is not None and cfg.skeleton not in SKELETONS:
        raise PoserError(f"unknown skeleton {cfg.skeleton!r} (known: {', '.join(SKELETONS)})")
    if cfg.skeleton is not None and cfg.stage > 1:
        raise PoserError("`skeleton` is chosen at stage one; refinement stages predict stage one's joints")
    if cfg.distill is not None and cfg.distill not in TEACHERS:
        raise PoserError(f"unknown teacher {cfg.distill!r} for `distill` (known: {', '.join(TEACHERS)})")
    if cfg.distill_skip and cfg.distill is None:
        raise PoserError("`distill_skip` names joints the teacher does not teach: give `distill` too")
    typos = set(cfg.distill_skip) - {j for sk in SKELETONS.values() for j in sk.joints}
    if typos:
        raise PoserError(f"`distill_skip`: no skeleton has the joints {', '.join(sorted(typos))}")
    if cfg.distill is not None and cfg.head != "integral":
        raise PoserError("`distill` teaches heatmaps: it takes `head` integral")
    if cfg.init and not Path(cfg.init).is_file():
        raise PoserError(f"`init` {cfg.init}: no such weights file")
    if cfg.init and cfg.stage > 1:
        raise PoserError("`init` starts a stage-one model; a refinement stage starts from `from_run`'s last stage")
    if cfg.stage > 1 and not cfg.from_run:
        raise PoserError(f"`stage` {cfg.stage} needs `from_run`: the run folder (or weights file) of stages "
                         f"1..{cfg.stage - 1}")
    _check_numbers(cfg)
    check_run_name(cfg.name)
    if not Path(cfg.data).is_dir():
        raise PoserError(f"`data` {cfg.data}: no such folder (make one with poser fetch-coco, fetch-lsp or synth)")


def _check_numbers(cfg: TrainConfig) -> None:
    """Finite numbers in range, said by option name (torch's own errors name neither)."""
    positive = {"--lr": cfg.lr, "--batch-size": cfg.batch_size, "--epochs": cfg.epochs}
    at_least_0 = {"--weight-decay": cfg.weight_decay, "--heatmap-weight": cfg.heatmap_weight,
                  "--backbone-lr": cfg.backbone_lr,
                  "--distill-weight": cfg.distill_weight,
                  "--rotate": cfg.aug.rotate}
    fractions = {"--distill-labelled": cfg.distill_labelled, "--loose": cfg.aug.loose, "--flip": cfg.aug.flip,
                 "--occlude": cfg.aug.occlude, "--truncate": cfg.aug.truncate,
                 "--degrade": cfg.aug.degrade, "--sticks": cfg.aug.sticks,
                 "--crowd": cfg.aug.crowd}
    for name, v in positive.items():
        if not (math.isfinite(v) and v > 0):
            raise PoserError(f"{name} {v}: must be a finite number above 0")
    for name, v in at_least_0.items():
        if not (math.isfinite(v) and v >= 0):
            raise PoserError(f"{name} {v}: must be a finite number >= 0")
    for name, v in fractions.items():
        if not (math.isfinite(v) and 0 <= v <= 1):
            raise PoserError(f"{name} {v}: must be a probability in [0, 1]")
    if not (math.isfinite(cfg.aug.scale) and 0 <= cfg.aug.scale < 1):
        raise PoserError(f"`scale` {cfg.aug.scale}: must be in [0, 1) (crops of side x U(1 - scale, 1 + scale))")
    if cfg.steps_per_epoch is not None and cfg.steps_per_epoch < 1:
        raise PoserError(f"`steps_per_epoch` {cfg.steps_per_epoch}: must be at least 1 (leave it out for whole "
                         "epochs)")
