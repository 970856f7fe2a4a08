"""`poser bench`: throughput on this machine, each figure printed next to the limit that
bounds it here (measured in the same run, not assumed).

Sections register themselves in BENCHES; `poser bench --only NAME` runs one.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from poser.console import console

BENCHES: dict[str, Callable[[Path | None, Path], list[dict]]] = {}


def bench(name: str):
    def reg(fn):
        BENCHES[name] = fn
        return fn
    return reg


def _rate(n: int, fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def _row(what: str, rate: float, unit: str, limit: float | None = None, limit_what: str = "") -> dict:
    return {"what": what, "rate": round(rate, 1), "unit": unit,
            "limit": None if limit is None else round(limit, 1), "limit_what": limit_what,
            "of_limit": None if not limit else round(rate / limit, 3)}


@bench("data")
def bench_data(data: Path | None, work: Path) -> list[dict]:
    """Preparation (instances/s) and loading (samples/s, decoded to tensors) from the cache,
    against a naive per-sample loader that opens the original photo with PIL each time."""
    from PIL import Image
    from torch.utils.data import DataLoader
    from torchvision.transforms.functional import pil_to_tensor

    from poser import geometry as g
    from poser.data.cache import CacheDataset, CacheSpec, build_cache, decode_rgb
    from poser.data.datasets import open_dataset
    from poser.data.synth import SynthConfig, generate

    cores = os.cpu_count() or 1
    if data is None:  # photo-sized synthetic images (COCO photos are about 640 x 480)
        data = work / "synth"
        generate(data, SynthConfig(images=750, seed=0, min_size=480, max_size=640, val_fraction=0.2))
    inst = open_dataset(data, "train")
    spec = CacheSpec()
    out = work / "cache"
    prep = _rate(len(inst), lambda: build_cache(inst, out, spec))
    ds = CacheDataset(out)
    n = len(ds)

    def load(workers: int) -> float:
        # Steady state: a warm-up pass starts the workers, then two timed passes.
        dl = DataLoader(ds, batch_size=64, num_workers=workers, persistent_workers=workers > 0)
        for _ in dl:
            pass
        return _rate(2 * n, lambda: [None for _ in range(2) for _ in dl])

    cache_1, cache_all = load(0), load(cores)
    blobs = [np.array(ds.cache.encoded(i)) for i in range(min(n, 500))]
    decode_limit = _rate(len(blobs), lambda: [decode_rgb(b) for b in blobs]) * cores
    center, side = g.box_to_square(inst.boxes, spec.margin)

    def naive() -> None:
        for i in range(len(inst)):
            x0, y0 = center[i] - side[i] / 2
            im = Image.open(inst.path(i)).convert("RGB")
            crop = im.crop((int(x0), int(y0), int(x0 + side[i]), int(y0 + side[i]))).resize((spec.size, spec.size))
            pil_to_tensor(crop)

    naive_1 = _rate(len(inst), naive)
    return [
        _row(f"prepare {len(inst)} instances, {cores} procs", prep, "inst/s"),
        _row("cache -> tensors, 1 proc", cache_1, "samples/s", decode_limit / cores, "decode, 1 core"),
        _row(f"cache -> tensors, {cores} workers", cache_all, "samples/s", decode_limit, f"decode, {cores} cores"),
        _row("naive PIL photo+crop, 1 proc", naive_1, "samples/s", decode_limit / cores, "decode, 1 core"),
        _row("cache / naive, 1 proc", cache_1 / naive_1, "x"),
    ]


def run(only: list[str] | None = None, data: Path | None = None) -> list[dict]:
    """Run the chosen sections; returns every row (what, rate, unit, limit, of_limit)."""
    torch.set_num_threads(os.cpu_count() or 1)
    rows: list[dict] = []
    names = only or list(BENCHES)
    for name in names:
        if name not in BENCHES:
            from poser.errors import PoserError

            raise PoserError(f"unknown benchmark {name!r} (known: {', '.join(BENCHES)})")
        with tempfile.TemporaryDirectory(prefix="poser-bench-") as tmp:
            console.print(f"[bold]bench {name}[/] ...")
            for r in BENCHES[name](data, Path(tmp)):
                rows.append({"section": name, **r})
    return rows
