"""One way to start training for every setup: CPU, one GPU, `--gpus N`, `--procs N` on the
CPU (gloo), and `torchrun` (one or several machines).

`launch(fn, *args, gpus=, procs=, device=)` runs `fn(*args)` in every process; inside it,
`init()` returns this process's rank, world size and device.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from poser.device import device_type, resolve_device
from poser.errors import PoserError


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init(device: str = "auto") -> Dist:
    """Join the process group if there is one; pick this process's device."""
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist(0, 1, 0, torch.device(resolve_device(device)))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    dev = torch.device(resolve_device(device))
    if dev.type == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    if dev.type == "cpu":  # share the cores between the processes on this machine
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return Dist(rank, world, local, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(local: int, world: int, port: int, fn, args, show: tuple[bool, bool] = (False, False)) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local), LOCAL_RANK=str(local),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    if local == 0 and show[0]:          # as the parent shows them: the run folder, epochs, bar
        from poser.console import show_messages

        show_messages(bars=show[1])
    fn(*args)


def launch(fn, *args, gpus: int = 1, procs: int = 1, device: str = "auto") -> None:
    """Run fn(*args) once per process: as is under torchrun or for a single process, else
    spawned here, one process per GPU (`gpus`) or `procs` CPU processes."""
    if under_torchrun():
        return fn(*args)
    if gpus > 1:
        if not torch.cuda.is_available():
            raise PoserError(f"`gpus` {gpus}: no CUDA device is available here (use `device` cpu `procs` N "
                             "for multi-process training on the CPU)")
        if torch.cuda.device_count() < gpus:
            raise PoserError(f"`gpus` {gpus}: only {torch.cuda.device_count()} CUDA device(s) visible")
        world = gpus
    elif procs > 1:
        if device_type(resolve_device(device) if device == "auto" else device) != "cpu":
            raise PoserError("`procs` is for CPU training; on GPUs use `gpus` N")
        world = procs
    else:
        return fn(*args)
    try:
        from poser.console import bars_shown, messages_shown

        show = (messages_shown(), bars_shown())
        mp.start_processes(_worker, args=(world, _free_port(), fn, args, show), nprocs=world, start_method="spawn")
    except mp.ProcessRaisedException as e:
        last = str(e).strip().splitlines()[-1].removeprefix("poser.errors.PoserError: ")
        raise PoserError(f"a training process failed: {last}") from None
