"""`poser annotate`: skeletons on images, folders and videos, and one keypoint JSON.

Inputs are expanded into a list of image files and video files; each is processed on its
own, so one bad input is reported and the others still run. Images are batched through the
model; a video runs as a pipeline of three threads (decode -> model -> draw + encode) so
OpenCV's decoding and encoding overlap with the model. In a video each person's box follows
the previous frame's keypoints, which makes frames sequential for tracked people: the
batch there is the people of one frame.

Every output is written under a temporary name and renamed when complete: an interrupted
run never leaves a half-written file that looks finished.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from poser import __version__
from poser import geometry as g
from poser.console import console, progress
from poser.data.detections import read_detections
from poser.draw import draw_box, draw_pose
from poser.errors import PoserError
from poser.files import atomic_path, write_json
from poser.imageio import read_rgb
from poser.predict import SEARCH_ROUNDS, Predictor

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXT = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}


@dataclass
class AnnotateConfig:
    inputs: list[str]
    weights: str | None = None
    out: str = "runs/annotate"
    name: str | None = None
    boxes: str | None = None            # COCO-style detections: [{bbox, score, file_name | image_id}]
    box_threshold: float = 0.5
    min_score: float = 0.2              # joints below are not drawn
    smooth: bool = False                # One-Euro filter on video keypoints
    flip: bool = False
    batch_size: int = 16
    device: str = "auto"
    draw: bool = True                   # write annotated copies (JSON is always written)
    search: int = SEARCH_ROUNDS         # without --boxes: person-search passes after the whole-image one


@dataclass
class Source:
    path: Path
    kind: str                           # "image" or "video"
    rel: Path                           # output name, relative to the output folder


@dataclass
class Result:
    records: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0


def collect(inputs: list[str]) -> tuple[list[Source], list[dict]]:
    """Expand files and folders (recursively, sorted) into sources; problems as failures."""
    sources, failed = [], []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXT | VIDEO_EXT)
            if not files:
                failed.append({"source": str(p), "error": "folder has no images or videos"})
            for f in files:
                sources.append(_source(f, Path(p.name) / f.relative_to(p)))
        elif p.is_file():
            sources.append(_source(p, Path(p.name)))
        else:
            failed.append({"source": str(p), "error": "no such file or folder"})
    seen: dict[Path, int] = {}
    for s in sources:                   # two inputs with the same name must not overwrite each other
        n = seen.get(s.rel, 0)
        seen[s.rel] = n + 1
        if n:
            s.rel = s.rel.with_name(f"{s.rel.stem}_{n}{s.rel.suffix}")
    return sources, failed


def _source(path: Path, rel: Path) -> Source:
    kind = "video" if path.suffix.lower() in VIDEO_EXT else "image"
    return Source(path, kind, rel.with_suffix(".mp4") if kind == "video" else rel)


def boxes_for(src: Source, boxes: dict | None, wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Person boxes (N, 4) and scores for a source: from --boxes (by file name, or by a
    numeric file stem as COCO image id), else the whole image."""
    if boxes is not None:
        found = boxes["name"].get(src.path.name)
        if found is None and src.path.stem.isdigit():
            found = boxes["id"].get(int(src.path.stem))
        if found:
            return np.stack([b for b, _ in found]), np.array([s for _, s in found])
        return np.zeros((0, 4)), np.zeros(0)
    w, h = wh
    return np.array([[0.0, 0.0, float(w), float(h)]]), np.ones(1)


def person_records(pred: dict, boxes: np.ndarray, box_scores: np.ndarray, joints: tuple[str, ...],
                   min_score: float) -> list[dict]:
    """JSON records of the persons of one image or frame: box, keypoints by joint name as
    [x, y, score] in the source's pixels, and visibility (in the frame and confident)."""
    out = []
    for i in range(len(boxes)):
        xy, sc = pred["coords"][i], pred["score"][i]
        vis = (pred["visible"][i] >= 0.5) & (sc >= min_score)
        out.append({
            "box": [round(float(v), 2) for v in boxes[i]], "box_score": round(float(box_scores[i]), 4),
            "keypoints": {j: [round(float(xy[k, 0]), 2), round(float(xy[k, 1]), 2), round(float(sc[k]), 4)]
                          for k, j in enumerate(joints)},
            "visible": {j: bool(vis[k]) for k, j in enumerate(joints)},
        })
    return out


def annotate(cfg: AnnotateConfig, predictor: Predictor, out_dir: Path) -> Result:
    """Annotate every input into `out_dir`; writes `keypoints.json` there and returns the result."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)    # OpenCV's pool would contend with the model's threads for the same cores
    try:
        return _annotate(cfg, predictor, out_dir)
    finally:
        cv2.setNumThreads(threads)


def _annotate(cfg: AnnotateConfig, predictor: Predictor, out_dir: Path) -> Result:
    sources, failed = collect(cfg.inputs)
    res = Result(failed=failed)
    for f in failed:
        _report(f)
    boxes = read_detections(Path(cfg.boxes), cfg.box_threshold) if cfg.boxes else None
    images = [s for s in sources if s.kind == "image"]
    videos = [s for s in sources if s.kind == "video"]
    t0 = time.perf_counter()
    if images:
        _images(cfg, predictor, images, boxes, out_dir, res)
    for v in videos:
        try:
            _video(cfg, predictor, v, boxes, out_dir, res)
        except PoserError as e:
            res.failed.append({"source": str(v.path), "error": str(e)})
            _report(res.failed[-1])
    res.seconds = time.perf_counter() - t0
    sk = predictor.skeleton
    write_json(out_dir / "keypoints.json", {
        "format": "poser-keypoints/1", "poser_version": __version__,
        "model": {k: predictor.meta.get(k) for k in ("backbone", "head", "input_size", "stage", "skeleton", "epoch")},
        "skeleton": {"name": sk.name, "joints": list(sk.joints), "limbs": [list(lb) for lb in sk.draw_limbs]},
        "items": res.records, "failed": res.failed,
    }, indent=None)
    return res


def _report(f: dict) -> None:
    console.print(f"[red]failed:[/] {f['source']}: {f['error']}", soft_wrap=True, highlight=False)


# --- images ---------------------------------------------------------------------------------

def _images(cfg, predictor: Predictor, sources: list[Source], boxes, out_dir: Path, res: Result) -> None:
    """Batches of images: the next batch is read on I/O threads while the model runs, and
    annotated copies are drawn and written on them too."""
    def read(s: Source) -> np.ndarray | None:
        return read_rgb(s.path)

    def write(s: Source, img: np.ndarray, pred: dict, b: np.ndarray) -> None:
        canvas = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        _draw(canvas, pred, b, predictor, cfg.min_score, whole=boxes is None)
        dst = out_dir / s.rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(dst.suffix if dst.suffix.lower() in IMAGE_EXT else ".jpg", canvas)
        with atomic_path(dst) as tmp:
            tmp.write_bytes(buf.tobytes())

    chunks = [sources[i: i + cfg.batch_size] for i in range(0, len(sources), cfg.batch_size)]
    with progress("images") as bar, ThreadPoolExecutor(2) as io:
        task = bar.add_task("images", total=len(sources))
        writes = []
        pending = [io.submit(read, s) for s in chunks[0]]
        for c, chunk in enumerate(chunks):
            imgs = [f.result() for f in pending]
            if c + 1 < len(chunks):
                pending = [io.submit(read, s) for s in chunks[c + 1]]
            ok = [(s, im) for s, im in zip(chunk, imgs, strict=True) if im is not None]
            for s, im in zip(chunk, imgs, strict=True):
                if im is None:
                    res.failed.append({"source": str(s.path), "error": "not a readable image"})
                    _report(res.failed[-1])
            if boxes is None:       # no boxes: the person search, from each whole image
                preds = predictor.search([im for _, im in ok], cfg.search, cfg.flip)
                bx = [(p["box"], np.ones(1)) for p in preds]
            else:
                bx = [boxes_for(s, boxes, (im.shape[1], im.shape[0])) for s, im in ok]
                preds = predictor.predict_images([im for _, im in ok], [b for b, _ in bx], cfg.flip)
            for (s, im), (b, bs), pred in zip(ok, bx, preds, strict=True):
                h, w = im.shape[:2]
                res.records.append({"source": str(s.path), "type": "image", "frame": 0, "width": w, "height": h,
                                    "persons": person_records(pred, b, bs, predictor.skeleton.joints,
                                                              cfg.min_score)})
                if cfg.draw:
                    writes.append(io.submit(write, s, im, pred, b))
            res.frames += len(ok)
            bar.advance(task, len(chunk))
        for f in writes:
            f.result()


def _draw(canvas: np.ndarray, pred: dict, boxes: np.ndarray, predictor: Predictor, min_score: float,
          whole: bool) -> None:
    for i in range(len(boxes)):
        if not whole:
            draw_box(canvas, boxes[i])
        draw_pose(canvas, pred["coords"][i], predictor.skeleton, pred["score"][i], min_score)


# --- videos ---------------------------------------------------------------------------------

class OneEuro:
    """One-Euro filter (Casiez et al., CHI 2012) on arrays: smooths jitter at low speed and
    follows fast motion with little lag. Cut-offs in Hz, `beta` per px/s."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.02, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x = self.dx = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
        tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x
        dx = (x - self.x) / dt
        self.dx = self.dx + self._alpha(self.d_cutoff, dt) * (dx - self.dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx)
        self.x = self.x + self._alpha(cutoff, dt) * (x - self.x)
        return self.x.copy()


def plausible(coords: np.ndarray, scores: np.ndarray, box: np.ndarray, min_score: float) -> bool:
    """Whether a tracked pose is good enough to place the next frame's box."""
    ok = scores >= min_score
    if ok.sum() < max(4, len(scores) // 3):
        return False
    span = coords[ok].max(0) - coords[ok].min(0)
    return bool(span.max() > 0.15 * max(box[2], box[3]))   # not collapsed to a point


def next_box(coords: np.ndarray, scores: np.ndarray, min_score: float, wh: tuple[int, int]) -> np.ndarray:
    kp = np.concatenate([coords, (scores >= min_score)[:, None].astype(float)], -1)[None]
    b = g.keypoint_box(kp, g.PERSON_BOX_MARGIN)[0]
    x0, y0 = max(0.0, b[0]), max(0.0, b[1])
    x1, y1 = min(float(wh[0]), b[0] + b[2]), min(float(wh[1]), b[1] + b[3])
    return np.array([x0, y0, max(1.0, x1 - x0), max(1.0, y1 - y0)])


_END = object()


def _background_priority() -> None:
    """Lower this thread's scheduling priority (Linux: per-thread nice). The model's
    OpenMP threads wait for each other at every layer, so a decoder thread that pre-empts
    one of them stalls all; at a lower priority it runs in the gaps between layers instead."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):   # not Linux, or not permitted: just slower
        pass


def _video(cfg, predictor: Predictor, s: Source, boxes, out_dir: Path, res: Result) -> None:
    # One decoder thread is plenty for one stream; FFmpeg's own pool would contend with the model.
    cap = cv2.VideoCapture(str(s.path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])
    if not cap.isOpened():
        raise PoserError("not a readable video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if 0 < fps < 1000 else 25.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    frames_in: queue.Queue = queue.Queue(maxsize=32)
    frames_out: queue.Queue = queue.Queue(maxsize=32)
    errors: list[str] = []

    def decode() -> None:
        _background_priority()
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                frames_in.put(frame)
        finally:
            cap.release()
            frames_in.put(_END)

    dst = out_dir / s.rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.partial.mp4")
    written = [0]

    def encode() -> None:
        _background_priority()
        writer = None
        try:
            while (item := frames_out.get()) is not _END:
                frame, pred, b = item
                if writer is None and cfg.draw:
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (frame.shape[1], frame.shape[0]))
                    if not writer.isOpened():
                        raise PoserError("OpenCV cannot write mp4 here")
                if writer is not None:
                    _draw(frame, pred, b, predictor, cfg.min_score, whole=False)
                    writer.write(frame)
                written[0] += 1
        except Exception as e:  # reported by the main thread
            errors.append(str(e))
            while frames_out.get() is not _END:   # keep draining so the producer never blocks
                pass
        finally:
            if writer is not None:
                writer.release()

    threads = [threading.Thread(target=decode, daemon=True), threading.Thread(target=encode, daemon=True)]
    for t in threads:
        t.start()
    init, init_scores = boxes_for(s, boxes, (w, h))
    searching = boxes is None or len(init) == 0     # no box for this video: search the whole frame
    if len(init) == 0:
        init, init_scores = boxes_for(s, None, (w, h))
    tracks = [{"box": b.copy(), "filter": OneEuro() if cfg.smooth else None, "search": searching} for b in init]
    n, dt, recs = 0, 1.0 / fps, []
    try:
        with progress("frames") as bar:
            task = bar.add_task(s.path.name, total=total)
            while (frame := frames_in.get()) is not _END:
                b = np.stack([t["box"] for t in tracks]) if tracks else np.zeros((0, 4))
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                if tracks and tracks[0]["search"]:        # one person, (re)started from the whole frame
                    pred = predictor.search([rgb], cfg.search, cfg.flip)[0]
                    b = pred["box"]
                else:
                    pred = predictor.predict_image(rgb, b, cfg.flip)
                for i, t in enumerate(tracks):
                    if t["filter"] is not None:
                        pred["coords"][i] = t["filter"](pred["coords"][i], dt)
                    if plausible(pred["coords"][i], pred["score"][i], b[i], cfg.min_score):
                        t["box"] = next_box(pred["coords"][i], pred["score"][i], cfg.min_score, (w, h))
                        t["search"] = False
                    else:                                   # lost: start again from the initial box
                        t["box"], t["filter"] = init[i].copy(), OneEuro() if cfg.smooth else None
                        t["search"] = searching
                persons = person_records(pred, b, init_scores, predictor.skeleton.joints, cfg.min_score)
                recs.append({"source": str(s.path), "type": "video", "frame": n, "width": w, "height": h,
                             "fps": fps, "persons": persons})
                frames_out.put((frame, pred, b))
                n += 1
                bar.advance(task)
    finally:
        frames_out.put(_END)
        for t in threads:
            t.join()
    if errors:
        tmp.unlink(missing_ok=True)
        raise PoserError(errors[0])
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise PoserError("video has no frames")
    if cfg.draw:
        tmp.replace(dst)
    res.records += recs                     # only a complete video enters the JSON
    res.frames += n
