"""Training's front door: `train(cfg, gpus=, procs=)` runs one process, spawns one per GPU or CPU
process (DDP), or joins torchrun; `resume(run)` continues a run folder. The command line and
Python call the same two functions."""

from __future__ import annotations

from pathlib import Path

from poser.train.config import TrainConfig, check_config
from poser.train.distributed import launch, under_torchrun
from poser.train.folder import resume_run, run_summary, start_run
from poser.train.loop import fit
from poser.train.stages import stage_architecture


def new_config(stage: int = 1, from_run: str | Path | None = None, **fields) -> TrainConfig:
    """A new run's config from its options; `backbone`, `input_size` and `head` left None take
    the defaults, or for a refinement stage (2+, on `from_run`) stage one's architecture."""
    base = {"backbone": TrainConfig.backbone, "input_size": TrainConfig.input_size, "head": TrainConfig.head}
    if stage > 1 and from_run is not None:          # stage networks copy stage one's architecture
        base = stage_architecture(from_run, stage)
    given = {k: v for k, v in fields.items() if v is not None or k not in base}
    return TrainConfig(**(base | given), stage=stage, from_run=str(from_run) if from_run else None)


def train(cfg: TrainConfig, gpus: int = 1, procs: int = 1) -> dict | None:
    """Train `cfg` (a new run, or `cfg.resume`'s) on `gpus` GPUs or `procs` CPU processes;
    returns the run's summary on rank 0 (None elsewhere)."""
    check_config(cfg)
    spawn = (gpus > 1 or procs > 1) and not under_torchrun()
    if spawn and cfg.resume is None:
        cfg = start_run(cfg)        # here, so every spawned process knows the folder
    summary = launch(fit, cfg, gpus=gpus, procs=procs, device=cfg.device)
    return run_summary(Path(cfg.resume or cfg.run)) if spawn else summary


def resume(run: str | Path, epochs: int | None = None, **where) -> dict | None:
    """Continue a run folder where it stopped (Ctrl-C, SIGTERM, a crash after a checkpoint), in
    one call: `poser.train.launch.resume("runs/train/exp1", epochs=60)`. See `resume_run`."""
    return fit(resume_run(Path(run), epochs, **where))
