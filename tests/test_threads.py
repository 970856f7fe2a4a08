"""CPU thread settings (poser/threads.py): brief OpenMP spinning and threads from the free cores."""

import os

import pytest
import torch

from poser import threads


def test_free_cores_counts_what_other_processes_leave_idle(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(threads, "_mark", None)     # no start mark: it sleeps `interval` and measures
    for busy, free in ((0.0, 4), (0.5, 2), (0.74, 1), (1.0, 1)):      # share of all cores' time busy
        samples = iter([(0, 1000), (int(busy * 1000), 2000)])
        monkeypatch.setattr(threads, "_cpu_times", lambda s=samples: next(s))
        assert threads.free_cores(interval=0.0) == free, busy
    monkeypatch.setattr(threads, "_cpu_times", lambda: None)          # no /proc/stat: every core
    assert threads.free_cores(interval=0.0) == 4


def test_free_cores_since_the_start_leave_out_this_process_own_work(monkeypatch):
    """The load is measured over the imports: what this process burnt meanwhile is not 'busy'."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads, "_mark", None)                 # restored after the test
    monkeypatch.setenv("GOMP_SPINCOUNT", threads.SPINCOUNT)
    for other, free in ((0.0, 2), (1.0, 1)):         # cores another process keeps busy
        cpu = iter([5.0, 6.0])                      # this process: one core for the one second
        monkeypatch.setattr(threads.time, "process_time", lambda c=cpu: next(c))
        samples = iter([(0, 0), (int((1 + other) * 100), 200)])
        monkeypatch.setattr(threads, "_cpu_times", lambda s=samples: next(s))
        clock = iter([100.0, 101.0, 101.0])
        monkeypatch.setattr(threads.time, "monotonic", lambda c=clock: next(c))
        threads.configure_openmp()
        assert threads.free_cores() == free, other


def test_set_threads_takes_the_option_then_the_environment_then_the_free_cores(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads, "free_cores", lambda: 3)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert threads.set_threads(None) == 3 and torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.set_threads(None) == 2 and torch.get_num_threads() == 2
        assert threads.set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_openmp_spins_briefly_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads.configure_openmp()
    assert os.environ["GOMP_SPINCOUNT"] == threads.SPINCOUNT
    monkeypatch.setenv("GOMP_SPINCOUNT", "7")
    threads.configure_openmp()
    assert os.environ["GOMP_SPINCOUNT"] == "7"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.configure_openmp()
    assert "GOMP_SPINCOUNT" not in os.environ


@pytest.mark.slow
def test_bench_threads_workloads_measure_the_shipped_model():
    from poser.bench.sections import threads_workload

    before = torch.get_num_threads()
    try:
        assert threads_workload("frame", None, auto=True) > 0
        assert threads_workload("train", None, auto=False) > 0
        assert torch.get_num_threads() == (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)
