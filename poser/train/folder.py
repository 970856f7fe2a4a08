"""A training run's folder over its life: started (config.json), resumed (from anywhere, with
only its length and place changed), summarised."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

from rich.table import Table

from poser.errors import PoserError
from poser.runs import new_run_dir, read_jsonl, save_config
from poser.train.config import TrainConfig
from poser.train.state import state_epochs

# What a resumed run may change: how long it runs and where. Everything else is the run's own.
RESUME_MAY_CHANGE = ("epochs", "device", "gpus", "procs", "workers")


def check_resume_changes(run: Path, given: list[str]) -> None:
    """A resume continues with the run's own settings: refuse, naming them, the options `given`
    (besides RESUME_MAY_CHANGE) that would change them."""
    fixed = [g for g in given if g.lstrip("-").replace("-", "_") not in RESUME_MAY_CHANGE]
    if fixed:
        raise PoserError(f"`resume` {run} continues with the run's own settings (its config.json): "
                         f"{', '.join(fixed)} cannot change; only {', '.join(RESUME_MAY_CHANGE)} can "
                         "(start a new run to change the rest)")


def start_run(cfg: TrainConfig) -> TrainConfig:
    """Create the run folder (next free name) with its config.json; `cfg.run` names it."""
    run = new_run_dir(Path(cfg.out), cfg.name)
    cfg = replace(cfg, run=str(run), workdir=os.getcwd())
    save_config(run, asdict(cfg))
    return cfg


def resume_run(run: Path, epochs: int | None = None, device: str | None = None,
               workers: int | None = None) -> TrainConfig:
    """The config to continue `run` with: its own config.json, where only the schedule's length
    and the place it runs may change. `epochs` sets a new total (more or fewer than planned,
    but beyond the epochs done); config.json then records it, as the schedule now followed.
    `device` and `workers` (None: as before) apply to this continuation only."""
    cfg_file = run / "config.json"
    if not cfg_file.is_file() or not (run / "last.state.safetensors").is_file():
        hint = (f"; its weights can start a new run: --init {run / 'last.safetensors'}"
                if (run / "last.safetensors").is_file() else "")
        raise PoserError(f"`resume` {run}: not a run folder with a saved training state{hint}")
    try:
        cfg = TrainConfig.from_dict(json.loads(cfg_file.read_text()))
    except (ValueError, TypeError, AttributeError, PoserError) as e:     # not JSON, or not a config's fields
        raise PoserError(f"`resume` {run}: config.json is not a readable training config ({e})") from None
    done = state_epochs(run / "last.state.safetensors")     # not metrics.jsonl: a killed save can leave a line more
    if (epochs or cfg.epochs) <= done:
        raise PoserError(f"`resume` {run}: {done} epochs are already done; pass a larger `epochs`")
    if epochs is not None and epochs != cfg.epochs:
        cfg = replace(cfg, epochs=epochs)
        save_config(run, asdict(cfg))
    where = {k: v for k, v in (("device", device), ("workers", workers)) if v is not None}
    return replace(cfg.relative_to_start(), resume=str(run), **where)


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
