"""The plumbing around the training loop: loader processes, Ctrl-C and SIGTERM agreed across
processes, DDP replica checks and barriers, the step progress bar."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from pathlib import Path

import torch
import torch.distributed as dist
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from poser.console import RateColumn, log, progress
from poser.errors import PoserError
from poser.train import distributed


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


class StopRequest:
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


def replicas_identical(module: nn.Module, d: distributed.Dist) -> bool | None:
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


def interrupted(run: Path | None, where: str) -> PoserError:
    return PoserError(f"interrupted at {where}: state saved; continue with 'poser train --resume {run}'",
                      exit_code=130)


def barrier(d: distributed.Dist) -> None:
    if d.world > 1:
        dist.barrier()


def step_progress() -> Progress:
    return progress("steps", (BarColumn(), MofNCompleteColumn(), RateColumn("steps"), TextColumn("{task.fields[info]}"),
                              TimeRemainingColumn()))
