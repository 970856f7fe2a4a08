"""CPU threads for torch on a machine that may be busy: OpenMP's spinning, and how many threads.

torch's CPU kernels run on an OpenMP pool (libgomp on Linux) whose threads spin between
layers waiting for each other. On a quiet machine that saves a wake-up per layer; when another
process holds a core, a spinning thread burns the time slice its partner needs, and throughput
collapses (measured on 2 cores beside a training run: the shipped model 5.8 frames/s instead of
~60, a training step 4.7 samples/s instead of ~40). Two remedies, both measured (docs/runtimes.md,
`poser bench --only threads`):

- Spin briefly, then sleep (`GOMP_SPINCOUNT`, set before torch loads libgomp): as fast as the
  default when quiet, 3-5x faster when loaded. `OMP_WAIT_POLICY=PASSIVE` (never spin) halves
  per-frame inference on a quiet machine, so it is not the default.
- As many threads as cores are free when the command starts (`free_cores`): with every core
  busy, one thread has no partner to wait for.

A user's own `GOMP_SPINCOUNT`, `OMP_WAIT_POLICY`, `OMP_NUM_THREADS` or `--threads` wins.
"""

from __future__ import annotations

import os
import sys
import time

SPINCOUNT = "10000"     # libgomp's default spins ~100x longer; measured: docs
MARK_AGE = 30.0         # s: an older start mark (a long-lived process) says little of the load now


_mark: tuple[tuple[int, int], float, float] | None = None     # (cpu times, own CPU s, wall s) at the start


def configure_openmp() -> None:
    """Brief spinning for the OpenMP pool; effective only before torch is first imported. Also
    marks the CPU times at the start, so `free_cores` measures the load over the imports that
    follow instead of sleeping for it."""
    global _mark
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPINCOUNT)
    times = _cpu_times()
    _mark = None if times is None else (times, time.process_time(), time.monotonic())


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores since boot, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)       # idle + iowait
    return sum(fields) - idle, sum(fields)


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def free_cores(interval: float = 0.2) -> int:
    """Cores that other processes left idle, at least 1; all of them where /proc/stat cannot
    be read. Measured since `configure_openmp` marked the start, when that was at least
    `interval` seconds ago (the commands: the imports take longer), else over `interval`
    seconds of sleep."""
    n = cores()
    if _mark is not None and interval <= time.monotonic() - _mark[2] <= MARK_AGE:
        a, own0, t0 = _mark                     # since the start: this process's own work subtracted
        b = _cpu_times()
        own = (time.process_time() - own0) / max(time.monotonic() - t0, 1e-6)
    else:
        a, own = _cpu_times(), 0.0
        time.sleep(interval)
        b = _cpu_times()
    if a is None or b is None or b[1] <= a[1]:
        return n
    busy = (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or n) - own
    return max(1, min(n, round(n - busy)))


_chosen: int | None = None      # set_threads' choice, for torch and the exported runtimes alike
_torch_pending = False          # chosen before torch was loaded: applied when it is (sync_torch)


def set_threads(requested: int | None = None) -> int:
    """The process's compute threads: `requested`, else OMP_NUM_THREADS if set, else the free
    cores. Applied to torch now if it is loaded, else once it is (`sync_torch`), and read by
    the exported runtimes (`num_threads`): a command that never runs torch never imports it.
    Returns the number used."""
    global _chosen, _torch_pending
    if requested is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        requested = int(os.environ["OMP_NUM_THREADS"])
    _chosen, _torch_pending = max(1, requested or free_cores()), True
    sync_torch()
    return _chosen


def num_threads() -> int:
    """The threads set_threads chose; torch's own count if torch is loaded and nothing was chosen,
    else one per core."""
    if _chosen is not None:
        return _chosen
    return sys.modules["torch"].get_num_threads() if "torch" in sys.modules else cores()


def sync_torch() -> None:
    """Give torch the count set_threads chose, once, as soon as torch is loaded (code that
    imports torch lazily calls this after the import; later calls change nothing, so a
    thread count torch was given since stays)."""
    global _torch_pending
    if _torch_pending and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(_chosen)
        _torch_pending = False
