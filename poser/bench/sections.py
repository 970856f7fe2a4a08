"""`poser bench`: throughput on this machine, each figure printed next to the limit that
bounds it here (measured in the same run, not assumed).

Sections register themselves in BENCHES; `poser bench --only NAME` runs one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from poser.console import log
from poser.threads import SPINCOUNT

# section(data, weights, work dir) -> rows; `weights` is for the sections that run a model
BENCHES: dict[str, Callable[[Path | None, Path | None, Path], list[dict]]] = {}


def bench(name: str):
    def reg(fn):
        BENCHES[name] = fn
        return fn
    return reg


def per_second(n: int, fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def row(what: str, rate: float, unit: str, limit: float | None = None, limit_what: str = "",
         ratio: bool = False) -> dict:
    """One result. `limit` bounds `rate` (of_limit = rate / limit); with `ratio`, `limit` is a
    rate to compare with (a consumer that must be slower), and of_limit reads as 'x times'."""
    return {"what": what, "rate": round(rate, 1), "unit": unit,
            "limit": None if limit is None else round(limit, 1), "limit_what": limit_what,
            "of_limit": None if not limit else round(rate / limit, 3), "ratio": ratio}


@bench("data")
def bench_data(data: Path | None, weights: Path | None, work: Path) -> list[dict]:
    """Preparation (instances/s) and loading (samples/s, decoded to tensors) from the cache,
    against a naive per-sample loader that opens the original photo with PIL each time."""
    from PIL import Image
    from torch.utils.data import DataLoader
    from torchvision.transforms.functional import pil_to_tensor

    from poser import geometry as g
    from poser.data.cache import CacheDataset, CacheSpec, build_cache
    from poser.data.datasets import open_dataset
    from poser.imageio import decode_rgb
    from poser.synth.dataset import SynthConfig, generate

    cores = os.cpu_count() or 1
    if data is None:  # photo-sized synthetic images (COCO photos are about 640 x 480)
        data = work / "synth"
        generate(data, SynthConfig(images=750, seed=0, min_size=480, max_size=640, val_fraction=0.2))
    inst = open_dataset(data, "train")
    spec = CacheSpec()
    out = work / "cache"
    prep = per_second(len(inst), lambda: build_cache(inst, out, spec))
    ds = CacheDataset(out)
    n = len(ds)

    def load(workers: int) -> float:
        # Steady state: a warm-up pass starts the workers, then two timed passes.
        dl = DataLoader(ds, batch_size=64, num_workers=workers, persistent_workers=workers > 0)
        for _ in dl:
            pass
        return per_second(2 * n, lambda: [None for _ in range(2) for _ in dl])

    cache_1, cache_all = load(0), load(cores)
    blobs = [np.array(ds.cache.encoded(i)) for i in range(min(n, 500))]
    decode_limit = per_second(len(blobs), lambda: [decode_rgb(b) for b in blobs]) * cores
    center, side = g.box_to_square(inst.boxes, spec.margin)

    def naive() -> None:
        for i in range(len(inst)):
            x0, y0 = center[i] - side[i] / 2
            im = Image.open(inst.path(i)).convert("RGB")
            crop = im.crop((int(x0), int(y0), int(x0 + side[i]), int(y0 + side[i]))).resize((spec.size, spec.size))
            pil_to_tensor(crop)

    naive_1 = per_second(len(inst), naive)
    return [
        row(f"prepare {len(inst)} instances, {cores} procs", prep, "inst/s"),
        row("cache -> tensors, 1 proc", cache_1, "samples/s", decode_limit / cores, "decode, 1 core"),
        row(f"cache -> tensors, {cores} workers", cache_all, "samples/s", decode_limit, f"decode, {cores} cores"),
        row("naive PIL photo+crop, 1 proc", naive_1, "samples/s", decode_limit / cores, "decode, 1 core"),
        row("cache / naive, 1 proc", cache_1 / naive_1, "x"),
    ]


def matmul_flops(n: int = 2048, reps: int = 10) -> float:
    """This CPU's fp32 matmul FLOP/s on all threads: the ceiling for convolution-heavy steps."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def _model_step(cfg, ds, size: int) -> tuple[float, float, float]:
    """Samples/s of training steps alone on one in-memory batch, of crops + augmentation
    alone, and the step's FLOP per sample."""
    from torch.utils.flop_counter import FlopCounterMode

    from poser.models.deeppose import create_model
    from poser.train.augment import Augment, make_batch
    from poser.train.config import loss_kind
    from poser.train.loop import Objective
    from poser.train.losses import PoseLoss

    torch.manual_seed(0)
    sk, bs, kind = ds.cache.skeleton, cfg.batch_size, loss_kind(cfg)
    obj = Objective(create_model(cfg.backbone, sk.num_joints, sigma=kind == "rle", head=cfg.head), PoseLoss(kind))
    obj = obj.to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(obj.parameters(), lr=1e-4)
    idx = np.arange(bs) % len(ds)
    img = torch.stack([ds.cache.image(i) for i in idx])
    rng = np.random.default_rng(0)

    def batch() -> dict:
        return make_batch(img, ds.cache.boxes[idx], ds.cache.keypoints[idx], size, sk, Augment(), rng)

    b = batch()

    def step() -> None:
        loss, _ = obj(b["x"], b["target"], b["weight"], b["visible"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()                                         # warm-up: oneDNN picks its kernels
    with FlopCounterMode(display=False) as fc:
        step()
    reps = 8 if size <= 128 else 4
    return (per_second(bs * reps, lambda: [step() for _ in range(reps)]),
            per_second(bs * reps, lambda: [batch() for _ in range(reps)]), fc.get_total_flops() / bs)


def _other_models(cfg, ds, peak: float) -> list[dict]:
    """Model steps of the other heads (at 128) and of the reference model's backbone."""
    from dataclasses import replace

    from poser.codec import HEADS

    rows = []
    for head in (h for h in HEADS if h != cfg.head):   # the other heads' price, at 128
        rate, _, flop = _model_step(replace(cfg, head=head), ds, 128)
        rows.append(row(f"{cfg.backbone} @128 {head} head: model step alone ({flop / 1e9:.2f} GFLOP/sample)",
                        rate, "samples/s", peak / flop, "matmul peak / FLOP per sample"))
    for size in (128, 160):          # the reference model's backbone (depthwise: far below the matmul peak)
        rate, _, flop = _model_step(replace(cfg, backbone="efficientnet_lite0"), ds, size)
        rows.append(row(f"efficientnet_lite0 @{size} {cfg.head} head: model step alone "
                        f"({flop / 1e9:.2f} GFLOP/sample)", rate, "samples/s", peak / flop,
                        "matmul peak / FLOP per sample"))
    return rows


@bench("train")
def bench_train(data: Path | None, weights: Path | None, work: Path) -> list[dict]:
    """Training throughput of the default backbone and head (fp32, channels_last) at input 128
    and 224: model steps alone (forward, backward, AdamW on a batch already in memory) against
    this CPU's matmul peak, for each head at 128; crops + augmentation alone; the loader alone;
    and `poser train` end to end (real epochs) against the model step alone."""
    from dataclasses import replace

    from torch.utils.data import DataLoader

    from poser.data.cache import CacheDataset, CacheSpec, cache_dir
    from poser.data.prepare import prepare_split
    from poser.synth.dataset import SynthConfig, generate
    from poser.train.config import TrainConfig
    from poser.train.distributed import Dist
    from poser.train.loop import fit
    from poser.train.plumbing import loader_workers

    cfg = TrainConfig(out=str(work / "runs"), device="cpu", epochs=2, val_batches=1, batch_size=32)
    workers = loader_workers(cfg.workers, Dist(0, 1, 0, torch.device("cpu")))
    if data is None:
        data = work / "synth"
        generate(data, SynthConfig(images=400, seed=0, val_fraction=0.1))
    spec = CacheSpec(size=cfg.cache_size)
    for split in ("train", "val"):
        prepare_split(Path(data), split, spec)
    ds = CacheDataset(cache_dir(Path(data), "train", spec))
    bs = cfg.batch_size
    peak = matmul_flops()
    rows = [row("fp32 matmul 2048^2, all threads", peak / 1e9, "GFLOP/s")]
    step_rate = {}
    for size in (128, 224):
        step_rate[size], aug, flop = _model_step(cfg, ds, size)
        # Real epochs: the second one is timed (the first includes start-up).
        e2e = fit(replace(cfg, data=str(data), input_size=size, steps_per_epoch=15 if size == 128 else 8,
                          name=f"bench{size}"))["last"]["samples_per_s"]
        rows += [
            row(f"{cfg.backbone} @{size} {cfg.head} head: model step alone ({flop / 1e9:.2f} GFLOP/sample)",
                 step_rate[size], "samples/s", peak / flop, "matmul peak / FLOP per sample"),
            row(f"{cfg.backbone} @{size} crops + augmentation alone", aug, "samples/s", step_rate[size],
                 "model step", ratio=True),
            row(f"{cfg.backbone} @{size} poser train end to end ({workers} loader workers)", e2e, "samples/s",
                 step_rate[size], "model step"),
        ]

    rows += _other_models(cfg, ds, peak)

    dl = DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    for _ in dl:                                   # warm-up pass (starts workers, fills the page cache)
        pass
    loader = per_second(len(dl) * bs, lambda: [None for _ in dl])
    for size in (128, 224):
        rows.append(row(f"loader alone ({workers} workers: decode, collate) vs @{size} step", loader, "samples/s",
                         step_rate[size], "model step", ratio=True))
    return rows


def threads_workload(kind: str, weights: str | None, auto: bool) -> float:
    """One measurement in a fresh process (OpenMP reads its settings once, at torch's import):
    the shipped model per video frame (frames/s), or training forward + backward passes at its input size
    (samples/s); `auto`: poser's thread choice (threads.set_threads), else one per core."""
    from poser.inference.predictor import DEFAULT_WEIGHTS, Predictor
    from poser.threads import set_threads

    set_threads(None) if auto else torch.set_num_threads(os.cpu_count() or 1)
    predictor = Predictor.from_file(Path(weights) if weights else DEFAULT_WEIGHTS)
    if kind == "frame":
        frame = np.random.default_rng(0).integers(0, 255, (360, 640, 3), np.uint8)
        box = np.array([[240.0, 40.0, 160.0, 300.0]])
        for _ in range(5):
            predictor.predict_image(frame, box)
        return per_second(40, lambda: [predictor.predict_image(frame, box) for _ in range(40)])
    model, size = predictor.model.train(), predictor.size
    x = torch.randn(16, 3, size, size).contiguous(memory_format=torch.channels_last)
    model(x)["coords"].sum().backward()
    return per_second(48, lambda: [model(x)["coords"].sum().backward() for _ in range(3)])


def _spawn(code: str, spin: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if spin:
        env["GOMP_SPINCOUNT"] = SPINCOUNT
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)


@bench("threads")
def bench_threads(data: Path | None, weights: Path | None, work: Path) -> list[dict]:
    """The CPU thread settings (poser/threads.py) on a quiet machine and beside another busy
    torch process (a load made here: matmuls on every core with libgomp's defaults, as a
    training run): libgomp's defaults (long spinning, a thread per core) against poser's
    (brief spinning, threads from the free cores)."""
    load_code = "import torch\na = torch.randn(1024, 1024)\nwhile True: a @ a"
    rows = []
    from poser.threads import free_cores

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for loaded in (False, True):
        load = _spawn(load_code, spin=False) if loaded else None
        try:
            if load:
                time.sleep(2.0)                       # its import done, its threads spinning
            busy = cores - free_cores(1.0)            # measured, not assumed: "quiet" only when it is
            for kind, unit in (("frame", "frames/s"), ("train", "samples/s")):
                rate = {}
                for auto in (False, True):
                    code = (f"from poser.bench.sections import threads_workload\n"
                            f"print(threads_workload({kind!r}, {str(weights) if weights else None!r}, {auto}))")
                    p = _spawn(code, spin=auto)
                    out, _ = p.communicate(timeout=600)
                    rate[auto] = float(out.strip().splitlines()[-1])
                where = ("beside a busy torch process" if loaded else "no load made here") + \
                    f" ({busy} of {cores} cores busy before)"
                what = "model per video frame" if kind == "frame" else "forward + backward (batch 16)"
                rows.append(row(f"{what}, {where}: libgomp defaults", rate[False], unit))
                rows.append(row(f"{what}, {where}: poser's thread settings", rate[True], unit, rate[False],
                                 "libgomp defaults", ratio=True))
        finally:
            if load:
                load.kill()
                load.wait()
    return rows


def run(only: list[str] | None = None, data: Path | None = None, weights: Path | None = None) -> list[dict]:
    """Run the chosen sections; returns every row (what, rate, unit, limit, of_limit)."""
    torch.set_num_threads(os.cpu_count() or 1)
    rows: list[dict] = []
    from poser.bench import SECTIONS, inference  # noqa: F401  (its sections register themselves)

    names = only or list(SECTIONS)
    for name in names:
        if name not in BENCHES:
            from poser.errors import PoserError

            raise PoserError(f"unknown benchmark {name!r} (known: {', '.join(BENCHES)})")
        with tempfile.TemporaryDirectory(prefix="poser-bench-") as tmp:
            log.info(f"bench {name} ...")
            for r in BENCHES[name](data, weights, Path(tmp)):
                rows.append({"section": name, **r})
    return rows


