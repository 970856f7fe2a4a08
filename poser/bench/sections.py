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


def _rate(n: int, fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def _row(what: str, rate: float, unit: str, limit: float | None = None, limit_what: str = "",
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
    return (_rate(bs * reps, lambda: [step() for _ in range(reps)]),
            _rate(bs * reps, lambda: [batch() for _ in range(reps)]), fc.get_total_flops() / bs)


@bench("train")
def bench_train(data: Path | None, weights: Path | None, work: Path) -> list[dict]:
    """Training throughput of the default backbone and head (fp32, channels_last) at input 128
    and 224: model steps alone (forward, backward, AdamW on a batch already in memory) against
    this CPU's matmul peak, for each head at 128; crops + augmentation alone; the loader alone;
    and `poser train` end to end (real epochs) against the model step alone."""
    from dataclasses import replace

    from torch.utils.data import DataLoader

    from poser.codec import HEADS
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
    rows = [_row("fp32 matmul 2048^2, all threads", peak / 1e9, "GFLOP/s")]
    step_rate = {}
    for size in (128, 224):
        step_rate[size], aug, flop = _model_step(cfg, ds, size)
        # Real epochs: the second one is timed (the first includes start-up).
        e2e = fit(replace(cfg, data=str(data), input_size=size, steps_per_epoch=15 if size == 128 else 8,
                          name=f"bench{size}"))["last"]["samples_per_s"]
        rows += [
            _row(f"{cfg.backbone} @{size} {cfg.head} head: model step alone ({flop / 1e9:.2f} GFLOP/sample)",
                 step_rate[size], "samples/s", peak / flop, "matmul peak / FLOP per sample"),
            _row(f"{cfg.backbone} @{size} crops + augmentation alone", aug, "samples/s", step_rate[size],
                 "model step", ratio=True),
            _row(f"{cfg.backbone} @{size} poser train end to end ({workers} loader workers)", e2e, "samples/s",
                 step_rate[size], "model step"),
        ]

    for head in (h for h in HEADS if h != cfg.head):   # the other heads' price, at 128
        rate, _, flop = _model_step(replace(cfg, head=head), ds, 128)
        rows.append(_row(f"{cfg.backbone} @128 {head} head: model step alone ({flop / 1e9:.2f} GFLOP/sample)",
                         rate, "samples/s", peak / flop, "matmul peak / FLOP per sample"))
    for size in (128, 160):          # the reference model's backbone (depthwise: far below the matmul peak)
        rate, _, flop = _model_step(replace(cfg, backbone="efficientnet_lite0"), ds, size)
        rows.append(_row(f"efficientnet_lite0 @{size} {cfg.head} head: model step alone "
                         f"({flop / 1e9:.2f} GFLOP/sample)", rate, "samples/s", peak / flop,
                         "matmul peak / FLOP per sample"))

    dl = DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    for _ in dl:                                   # warm-up pass (starts workers, fills the page cache)
        pass
    loader = _rate(len(dl) * bs, lambda: [None for _ in dl])
    for size in (128, 224):
        rows.append(_row(f"loader alone ({workers} workers: decode, collate) vs @{size} step", loader, "samples/s",
                         step_rate[size], "model step", ratio=True))
    return rows


@bench("annotate")
def bench_annotate(data: Path | None, weights: Path | None, work: Path) -> list[dict]:
    """`poser annotate` end to end on a 640 x 360 video (decode, crop, model, track, draw,
    encode) against predicting one person alone (crop + every stage's model, batch 1: one
    tracked person per frame), with `weights`, else the shipped reference model, else the same
    architecture untrained; for a cascade, also each shorter cascade, which prices every stage.
    Photos: 640 x 360 images with a person box against without (the person search)."""

    from poser.annotate.run import AnnotateConfig, annotate
    from poser.inference.predictor import DEFAULT_WEIGHTS, Predictor
    from poser.inference.search import SEARCH_PASSES
    from poser.models.deeppose import create_model
    from poser.skeletons import LSP14
    from poser.spec import StageSpec
    from poser.synth.dataset import write_video

    if weights is not None or DEFAULT_WEIGHTS.is_file():
        predictor = Predictor.from_file(weights or DEFAULT_WEIGHTS)
        what = f"{weights.name if weights else 'reference model'} ({predictor.spec.first.backbone} @{predictor.size})"
    else:
        spec = StageSpec(backbone="resnet18", skeleton="lsp14", joints=LSP14.joints, input_size=128, head="integral")
        predictor = Predictor([(create_model("resnet18", 14, head="integral"), spec)])
        what = "resnet18 @128 (no reference model shipped)"
    frames = 150
    path = work / "walk.mp4"
    write_video(path, frames, (640, 360), 30.0, step=2)
    frame = np.random.default_rng(0).integers(0, 255, (360, 640, 3), np.uint8)
    box = np.array([[240.0, 40.0, 160.0, 300.0]])
    rows = []
    for s in range(1, predictor.num_stages + 1):
        p = predictor.first_stages(s)
        for _ in range(3):
            p.predict_image(frame, box)
        alone = _rate(50, lambda p=p: [p.predict_image(frame, box) for _ in range(50)])
        rows.append(_row(f"one person, stage{'s 1-' + str(s) if s > 1 else ' 1'} alone: {what}", alone,
                         "persons/s"))
    photos = [np.random.default_rng(i).integers(0, 255, (360, 640, 3), np.uint8) for i in range(16)]
    with_box = _rate(48, lambda: [predictor.predict_images(photos, [box] * 16) for _ in range(3)])
    rows.append(_row("photos with a person box (one pass), batches of 16", with_box, "images/s"))
    for passes in (SEARCH_PASSES, 0):
        rate = _rate(48, lambda r=passes: [predictor.find_person(photos, r) for _ in range(3)])
        rows.append(_row(f"photos without boxes: person search, 1 + {passes} passes", rate, "images/s",
                         with_box, "with a box"))
    annotate(AnnotateConfig(inputs=[str(path)]), predictor, work / "warm")      # warm-up
    res = annotate(AnnotateConfig(inputs=[str(path)]), predictor, work / "out")
    rows.append(_row("annotate 640x360 mp4 end to end (decode, track, draw, encode)", res.frames / res.seconds,
                     "frames/s", alone, "one person alone, all stages"))
    return rows


@bench("detect")
def bench_detect(data: Path | None, weights: Path | None, work: Path) -> list[dict]:
    """Each registered person detector's images/s on 640 x 360 frames (random weights: the
    same time as trained ones), then annotate on a two-person video with the fast default
    detector every N frames (run for its cost; the boxes it returns are the video's true
    ones), next to the single-person tracking rate."""
    from poser import geometry as g
    from poser.annotate.run import DETECT_EVERY, AnnotateConfig, PersonBoxes, annotate
    from poser.detect.detectors import DEFAULT_DETECTOR, DETECTORS, PersonDetector, build_detector
    from poser.inference.predictor import DEFAULT_WEIGHTS, Predictor
    from poser.synth.dataset import write_crossing_video

    frame = np.random.default_rng(0).integers(0, 255, (360, 640, 3), np.uint8)
    rows, detectors = [], {}
    for name in DETECTORS:
        det = detectors[name] = PersonDetector(name, build_detector(name))
        det([frame])
        rows.append(_row(f"detector {name} (batch 1)", _rate(3, lambda d=det: [d([frame]) for _ in range(3)]),
                         "images/s"))
    predictor = Predictor.from_file(weights or DEFAULT_WEIGHTS, runtime="auto")     # annotate's default
    path = work / "two.mp4"
    truth = write_crossing_video(path, frames=60, size=(640, 360), rows=(10, 100), side=180)
    true_boxes = [g.keypoint_box(kp.astype(float), g.PERSON_BOX_MARGIN) for kp in truth]

    class TimedTruth(PersonBoxes):
        def find(self, srcs, images, frame=None):
            self.detector(images)                                   # the detector's cost ...
            return [(true_boxes[frame], np.full(len(true_boxes[frame]), 0.9))]   # ... known answers

    single = annotate(AnnotateConfig(inputs=[str(path)], draw=False), predictor, work / "single")
    alone = single.frames / single.seconds
    rows.append(_row("annotate 640x360, one person (person search, no detector)", alone, "frames/s"))
    runs = [(DEFAULT_DETECTOR, every) for every in (1, 5, 10, 30)]
    runs += [(name, DETECT_EVERY) for name in DETECTORS if name != DEFAULT_DETECTOR]   # picks the CPU default
    for name, every in runs:
        cfg = AnnotateConfig(inputs=[str(path)], draw=False, detect_every=every)
        res = annotate(cfg, predictor, work / f"multi-{name}-{every}", TimedTruth(cfg, predictor, detectors[name]))
        rows.append(_row(f"annotate 640x360, 2 people, {name} every {every} frames",
                         res.frames / res.seconds, "frames/s", alone, "one person"))
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
        return _rate(40, lambda: [predictor.predict_image(frame, box) for _ in range(40)])
    model, size = predictor.model.train(), predictor.size
    x = torch.randn(16, 3, size, size).contiguous(memory_format=torch.channels_last)
    model(x)["coords"].sum().backward()
    return _rate(48, lambda: [model(x)["coords"].sum().backward() for _ in range(3)])


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
                rows.append(_row(f"{what}, {where}: libgomp defaults", rate[False], unit))
                rows.append(_row(f"{what}, {where}: poser's thread settings", rate[True], unit, rate[False],
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
    names = only or list(BENCHES)
    for name in names:
        if name not in BENCHES:
            from poser.errors import PoserError

            raise PoserError(f"unknown benchmark {name!r} (known: {', '.join(BENCHES)})")
        with tempfile.TemporaryDirectory(prefix="poser-bench-") as tmp:
            log.info(f"bench {name} ...")
            for r in BENCHES[name](data, weights, Path(tmp)):
                rows.append({"section": name, **r})
    return rows


@bench("runtime")
def bench_runtime(data: Path | None, weights: Path | None, work: Path) -> list[dict]:
    """The network's forward on every installed runtime x precision, batches of 1 and 16 crops
    (normalised input, the head's raw outputs: what a runtime replaces), next to the crops/s
    this CPU's fp32 matmul rate would allow at the network's FLOP per crop; torch.compile
    beside them; then whole photos through the person search (1 + 3 passes) per runtime."""
    from torch.utils.flop_counter import FlopCounterMode

    from poser.inference.predictor import DEFAULT_WEIGHTS, Predictor
    from poser.inference.search import SEARCH_PASSES
    from poser.runtime import networks as rt

    path = weights or DEFAULT_WEIGHTS
    ref = Predictor.from_file(path, runtime="torch")
    size = ref.size
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        ref.model(torch.zeros(1, 3, size, size))
    flops = fc.get_total_flops()
    limit = matmul_flops() / flops
    what = f"{path.name} @{size} ({flops / 1e9:.2f} GFLOP/crop)"
    nets = {"torch/fp32": ref.networks[0]}
    try:
        compiled = torch.compile(ref.model)
        nets["torch.compile/fp32"] = rt.TorchNetwork(compiled, True)
    except Exception as e:          # no compiler toolchain: say so, measure the rest
        log.warning(f"torch.compile unavailable here: {e}")
    for name in ("onnxruntime", "openvino"):
        if not rt.installed(name):
            log.warning(f"{name} is not installed: not measured")
            continue
        for prec in ("fp32", "bf16") if name == "openvino" and rt.bf16_cpu() else ("fp32",):
            nets[f"{name}/{prec}"] = Predictor.from_file(path, runtime=name, precision=prec).networks[0]
    rows = []
    x = torch.rand(16, 3, size, size)
    pix = np.random.default_rng(0).integers(0, 256, (16, size, size, 3), np.uint8)
    spec = ref.spec.stages[0]
    for label, net in nets.items():
        for b in (1, 16):
            try:
                for _ in range(3):
                    net(x[:b])
            except Exception as e:      # torch.compile fails at its first call, not at torch.compile()
                log.warning(f"{label}: {str(e).splitlines()[0][:120]}")
                break
            reps = max(2, int(48 / b))
            rows.append(_row(f"{label}, batch {b}: {what}", _rate(reps * b, lambda n=net, b=b, r=reps: [
                n(x[:b]) for _ in range(r)]), "crops/s", limit, "fp32 matmul rate / FLOP per crop"))
        if hasattr(net, "pixels"):      # photos' crops as annotate feeds them: uint8, converted in OpenVINO
            net.pixels(pix, spec.mean, spec.std)        # OpenVINO compiles its uint8 graph at the first call
            rows.append(_row(f"{label}, batch 16, uint8 crops: {what}", _rate(48, lambda n=net: [
                n.pixels(pix, spec.mean, spec.std) for _ in range(3)]), "crops/s", limit,
                "fp32 matmul rate / FLOP per crop"))
    photos = [np.random.default_rng(i).integers(0, 255, (360, 640, 3), np.uint8) for i in range(16)]
    for label in [k for k in nets if "compile" not in k]:
        rt_name, prec = label.split("/")
        p = ref if label == "torch/fp32" else Predictor.from_file(path, runtime=rt_name, precision=prec)
        p.find_person(photos[:2])
        rate = _rate(32, lambda p=p: [p.find_person(photos) for _ in range(2)])
        rows.append(_row(f"whole photos 640x360, person search 1 + {SEARCH_PASSES} passes, {label}", rate,
                         "images/s"))
    return rows
