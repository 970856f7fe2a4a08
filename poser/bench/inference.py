"""`poser bench` sections that run a model: annotate (photos and video end to end), detect (the
person detectors, and the tracker that spares them), runtime (every installed runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from poser.bench.sections import bench, matmul_flops, per_second, row
from poser.console import log


@bench("annotate")
def bench_annotate(data: Path | None, weights: Path | None, work: Path) -> list[dict]:
    """`poser annotate` end to end on a 640 x 360 video (decode, crop, model, track, draw,
    encode) against predicting one person alone (crop + every stage's model, batch 1: one
    tracked person per frame), with `weights`, else the shipped reference model, else the same
    architecture untrained; for a cascade, also each shorter cascade, which prices every stage.
    Photos: 640 x 360 images with a person box against without (the person search)."""

    from poser.annotate.config import AnnotateConfig
    from poser.annotate.run import annotate
    from poser.inference.predictor import DEFAULT_WEIGHTS, Predictor
    from poser.inference.search import SEARCH_PASSES
    from poser.models.deeppose import create_model
    from poser.skeletons import LSP14
    from poser.spec import StageSpec
    from poser.synth.clips import write_video

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
        alone = per_second(50, lambda p=p: [p.predict_image(frame, box) for _ in range(50)])
        rows.append(row(f"one person, stage{'s 1-' + str(s) if s > 1 else ' 1'} alone: {what}", alone,
                         "persons/s"))
    photos = [np.random.default_rng(i).integers(0, 255, (360, 640, 3), np.uint8) for i in range(16)]
    with_box = per_second(48, lambda: [predictor.predict_images(photos, [box] * 16) for _ in range(3)])
    rows.append(row("photos with a person box (one pass), batches of 16", with_box, "images/s"))
    for passes in (SEARCH_PASSES, 0):
        rate = per_second(48, lambda r=passes: [predictor.find_person(photos, r) for _ in range(3)])
        rows.append(row(f"photos without boxes: person search, 1 + {passes} passes", rate, "images/s",
                         with_box, "with a box"))
    annotate(AnnotateConfig(inputs=[str(path)]), predictor, work / "warm")      # warm-up
    res = annotate(AnnotateConfig(inputs=[str(path)]), predictor, work / "out")
    rows.append(row("annotate 640x360 mp4 end to end (decode, track, draw, encode)", res.frames / res.seconds,
                     "frames/s", alone, "one person alone, all stages"))
    return rows


@bench("detect")
def bench_detect(data: Path | None, weights: Path | None, work: Path) -> list[dict]:
    """Each registered person detector's images/s on 640 x 360 frames (random weights: the
    same time as trained ones), then annotate on a two-person video with the fast default
    detector every N frames (run for its cost; the boxes it returns are the video's true
    ones), next to the single-person tracking rate."""
    from poser import geometry as g
    from poser.annotate.config import DETECT_EVERY, AnnotateConfig
    from poser.annotate.persons import PersonBoxes
    from poser.annotate.run import annotate
    from poser.detect.detectors import DEFAULT_DETECTOR, DETECTORS, PersonDetector, build_detector
    from poser.inference.predictor import DEFAULT_WEIGHTS, Predictor
    from poser.synth.clips import write_crossing_video

    frame = np.random.default_rng(0).integers(0, 255, (360, 640, 3), np.uint8)
    rows, detectors = [], {}
    for name in DETECTORS:
        det = detectors[name] = PersonDetector(name, build_detector(name))
        det([frame])
        rows.append(row(f"detector {name} (batch 1)", per_second(3, lambda d=det: [d([frame]) for _ in range(3)]),
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
    rows.append(row("annotate 640x360, one person (person search, no detector)", alone, "frames/s"))
    runs = [(DEFAULT_DETECTOR, every) for every in (1, 5, 10, 30)]
    runs += [(name, DETECT_EVERY) for name in DETECTORS if name != DEFAULT_DETECTOR]   # picks the CPU default
    for name, every in runs:
        cfg = AnnotateConfig(inputs=[str(path)], draw=False, detect_every=every)
        res = annotate(cfg, predictor, work / f"multi-{name}-{every}", TimedTruth(cfg, predictor, detectors[name]))
        rows.append(row(f"annotate 640x360, 2 people, {name} every {every} frames",
                         res.frames / res.seconds, "frames/s", alone, "one person"))
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
            rows.append(row(f"{label}, batch {b}: {what}", per_second(reps * b, lambda n=net, b=b, r=reps: [
                n(x[:b]) for _ in range(r)]), "crops/s", limit, "fp32 matmul rate / FLOP per crop"))
        if hasattr(net, "pixels"):      # photos' crops as annotate feeds them: uint8, converted in OpenVINO
            net.pixels(pix, spec.mean, spec.std)        # OpenVINO compiles its uint8 graph at the first call
            rows.append(row(f"{label}, batch 16, uint8 crops: {what}", per_second(48, lambda n=net: [
                n.pixels(pix, spec.mean, spec.std) for _ in range(3)]), "crops/s", limit,
                "fp32 matmul rate / FLOP per crop"))
    photos = [np.random.default_rng(i).integers(0, 255, (360, 640, 3), np.uint8) for i in range(16)]
    for label in [k for k in nets if "compile" not in k]:
        rt_name, prec = label.split("/")
        p = ref if label == "torch/fp32" else Predictor.from_file(path, runtime=rt_name, precision=prec)
        p.find_person(photos[:2])
        rate = per_second(32, lambda p=p: [p.find_person(photos) for _ in range(2)])
        rows.append(row(f"whole photos 640x360, person search 1 + {SEARCH_PASSES} passes, {label}", rate,
                         "images/s"))
    return rows
