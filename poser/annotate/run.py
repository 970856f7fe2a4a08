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

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from poser.annotate.config import AnnotateConfig, Result
from poser.annotate.inputs import Source, check_outputs, collect, earlier_items, earlier_run, keep_inputs
from poser.annotate.persons import PersonBoxes
from poser.console import log, progress
from poser.errors import PoserError
from poser.files import IMAGE_EXT, atomic_path, check_not_input, temp_prefix, write_json
from poser.imageio import read_rgb, truncated_jpeg
from poser.inference.assemble import load_predictor
from poser.inference.poses import Poses
from poser.inference.predictor import Predictor
from poser.runs import check_run_name, check_writable, new_run_dir
from poser.version import __version__
from poser.video.io import FrameReader, FrameWriter
from poser.video.tracking import Tracker


def annotate(cfg: AnnotateConfig, predictor: Predictor | None = None, out_dir: Path | None = None,
             boxes: PersonBoxes | None = None) -> Result:
    """Annotate every input; writes `keypoints.json` and the annotated copies into `out_dir`
    (default: cfg.out, else a new runs/annotate/<name>) and returns the result. Reads top to
    bottom: check, load the model (cfg.weights, unless `predictor` is given) and the person
    boxes (`boxes`, e.g. `PersonBoxes(cfg, predictor, detector=your_detector)`; default: cfg's
    --boxes, --detector or the person search), make the folder, run."""
    check(cfg, out_dir)
    predictor = predictor or load_predictor(cfg.weights, cfg.device, cfg.stages, cfg.runtime, cfg.precision)
    boxes = boxes or PersonBoxes(cfg, predictor)    # the detector (and its weights) before any folder exists
    if out_dir is None:
        out_dir = check_writable(Path(cfg.out)) if cfg.out else new_run_dir(Path("runs/annotate"), cfg.name)
    threads, level = cv2.getNumThreads(), cv2.utils.logging.getLogLevel()
    cv2.setNumThreads(1)    # OpenCV's pool would contend with the model's threads for the same cores
    # A writer failing (a full disk) warns once per frame on stderr; poser reports it once.
    cv2.utils.logging.setLogLevel(min(level, cv2.utils.logging.LOG_LEVEL_ERROR))
    try:
        return _annotate(cfg, predictor, Path(out_dir), boxes)
    finally:
        cv2.setNumThreads(threads)
        cv2.utils.logging.setLogLevel(level)


def check(cfg: AnnotateConfig, out_dir: Path | None = None) -> None:
    """Every option and input before the model loads: one line each."""
    if cfg.boxes and cfg.detector:
        raise PoserError("give boxes (`boxes`) or a detector (`detector`), not both")
    missing = [i for i in cfg.inputs if not Path(i).exists()]
    if missing and len(missing) == len(cfg.inputs):
        raise PoserError(f"no such file or folder: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    check_run_name(cfg.name)
    out = Path(out_dir) if out_dir is not None else Path(cfg.out) if cfg.out else None
    check_outputs(cfg, out)


def _annotate(cfg: AnnotateConfig, predictor: Predictor, out_dir: Path, boxes: PersonBoxes) -> Result:
    sources, failed = collect(cfg.inputs, out_dir)
    earlier = earlier_run(out_dir)
    keep_inputs(sources, out_dir, earlier)
    res = Result(out=out_dir, failed=failed)
    for f in failed:
        _report(f)
    if boxes.file is not None and sources and not any(boxes.file.has(s.path.name) for s in sources):
        log.warning(f"--boxes {cfg.boxes} has no detection for any input (entries match by file name, or a "
                    "numeric file stem as COCO image_id)")
    images = [s for s in sources if s.kind == "image"]
    videos = [s for s in sources if s.kind == "video"]
    t0 = time.perf_counter()
    try:
        if images:
            _images(cfg, predictor, images, boxes, out_dir, res)
        for v in videos:
            try:
                _video(cfg, predictor, v, boxes, out_dir, res)
            except KeyboardInterrupt:
                res.failed.append({"source": str(v.path), "error": "interrupted"})
                raise
            except Exception as e:      # one video failing (bad file, the model, the writer) spares the rest
                msg = str(e) if isinstance(e, PoserError) else f"{type(e).__name__}: {e}"
                res.failed.append({"source": str(v.path), "error": msg})
                _report(res.failed[-1])
    finally:        # interrupted too: what finished is written, and the interrupted input says so
        res.seconds = time.perf_counter() - t0
        _write_json(cfg, predictor, out_dir, boxes, res, earlier)
    return res


def _write_json(cfg: AnnotateConfig, predictor: Predictor, out_dir: Path, boxes: PersonBoxes, res: Result,
                earlier: dict) -> None:
    if cfg.save_boxes:
        write_json(Path(cfg.save_boxes), boxes.saved, indent=None)
    sk = predictor.skeleton
    model = predictor.spec.summary() | {"runtime": predictor.runtime}
    write_json(out_dir / "keypoints.json", {
        "format": "poser-keypoints/1", "poser_version": __version__, "model": model,
        "skeleton": {"name": sk.name, "joints": list(sk.joints), "limbs": [list(lb) for lb in sk.draw_limbs]},
        "items": _earlier_records(earlier, out_dir, model, res) + res.records, "failed": res.failed,
        "warnings": res.warnings,
    }, indent=None)


def _earlier_records(earlier: dict, out_dir: Path, model: dict, res: Result) -> list[dict]:
    """What an earlier run of the same model into `out_dir` found for sources this run did not
    annotate (not given, or failed now) and whose annotated copy is still there: a second run,
    failed or partial, never takes the first run's results out of the folder's keypoints.json."""
    items = earlier_items(earlier) if earlier.get("model") == model else []
    done = {r["source"] for r in res.records}
    return [r for r in items if isinstance(r, dict) and r.get("source") not in done
            and (r.get("output") is None or (out_dir / str(r["output"])).is_file())]


def _report(f: dict) -> None:
    log.error(f"failed: {f['source']}: {f['error']}")


# --- images ---------------------------------------------------------------------------------

def _write_copy(dst: Path, img: np.ndarray, poses: Poses, min_score: float, draw_boxes: bool) -> str | None:
    """An annotated copy; an error (full disk, a name too long) as one line naming the file."""
    canvas = poses.draw(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), min_score, boxes=draw_boxes)
    ok, buf = cv2.imencode(dst.suffix if dst.suffix.lower() in IMAGE_EXT else ".jpg", canvas)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst) as tmp:
            tmp.write_bytes(buf.tobytes())
    except (OSError, PoserError) as e:
        return f"{dst}: {e.strerror or e}" if isinstance(e, OSError) else str(e)
    return None


def _settle(writes: list, res: Result) -> None:
    """A copy that could not be written moves its record to `failed`; the rest still runs."""
    for rec, f in writes:
        err = f.result()
        if err is not None:
            res.records[:] = [r for r in res.records if r is not rec]
            res.failed.append({"source": rec["source"], "error": f"could not write the annotated copy: {err}"})
            _report(res.failed[-1])
    writes.clear()


def _images(cfg, predictor: Predictor, sources: list[Source], boxes, out_dir: Path, res: Result) -> None:
    """Batches of images: the next batch is read on I/O threads while the model runs, and
    annotated copies are drawn and written on them too."""
    def read(s: Source) -> np.ndarray | None:
        return read_rgb(s.path)

    def run(chunk: list[Source], imgs: list[np.ndarray | None], io, writes: list) -> None:
        ok = [(s, im) for s, im in zip(chunk, imgs, strict=True) if im is not None]
        for s, im in zip(chunk, imgs, strict=True):
            if im is None:
                res.failed.append({"source": str(s.path), "error": "not a readable image"})
                _report(res.failed[-1])
            elif truncated_jpeg(s.path):
                res.warnings.append({"source": str(s.path), "warning": "truncated JPEG: the part after the "
                                     "cut decodes as grey, poses there are guesses"})
                log.warning(f"{s.path}: {res.warnings[-1]['warning']}")
        if boxes.only_search:   # no boxes: the person search, from each whole image
            preds = predictor.find_person([im for _, im in ok], cfg.search_passes, cfg.flip)
            box_scores = [None] * len(preds)
        else:
            bx = boxes.find([s for s, _ in ok], [im for _, im in ok])
            preds = predictor.predict_images([im for _, im in ok], [b for b, _ in bx], cfg.flip)
            box_scores = [bs for _, bs in bx]
        for (s, im), bs, pred in zip(ok, box_scores, preds, strict=True):
            h, w = im.shape[:2]
            poses = Poses.from_prediction(pred, predictor.skeleton, bs)
            res.records.append({"source": str(s.path), "type": "image", "frame": 0, "width": w, "height": h,
                                "output": str(s.rel) if cfg.draw else None, "persons": poses.to_json(cfg.min_score)})
            if cfg.draw:
                writes.append((res.records[-1], io.submit(_write_copy, out_dir / s.rel, im, poses, cfg.min_score,
                                                          not boxes.only_search)))
        res.frames += len(ok)

    chunks = [sources[i: i + cfg.batch_size] for i in range(0, len(sources), cfg.batch_size)]
    with progress("images") as bar, ThreadPoolExecutor(2) as io:
        task = bar.add_task("images", total=len(sources))
        writes: list = []
        pending = [io.submit(read, s) for s in chunks[0]]
        for c, chunk in enumerate(chunks):
            try:
                imgs = [f.result() for f in pending]
                if c + 1 < len(chunks):
                    pending = [io.submit(read, s) for s in chunks[c + 1]]
                run(chunk, imgs, io, writes)
            except KeyboardInterrupt:       # the batch being annotated is the interrupted input
                done = {r["source"] for r in res.records}
                res.failed += [{"source": str(s.path), "error": "interrupted"}
                               for s in chunk if str(s.path) not in done]
                _settle(writes, res)
                raise
            bar.advance(task, len(chunk))
        _settle(writes, res)


# --- videos ---------------------------------------------------------------------------------

def _video(cfg, predictor: Predictor, s: Source, boxes: PersonBoxes, out_dir: Path, res: Result) -> None:
    """One video: decoded on a reader thread, drawn and encoded on a writer thread, the model
    (and the detector) here. Whatever fails, both threads stop and nothing half-written stays."""
    reader = FrameReader(s.path)
    (w, h), fps = reader.size, reader.fps
    dst = out_dir / s.rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    searching = boxes.uses_search(s)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dst), suffix=".partial.mp4", dir=dst.parent)  # one per run
    os.close(fd)
    writer = FrameWriter(Path(tmp), fps,
                         lambda frame, poses: poses.draw(frame, cfg.min_score, colour_by_track=not searching),
                         enabled=cfg.draw)
    tracker = Tracker(1 if searching else cfg.max_people, cfg.detect_every if boxes.periodic(s) else None,
                      cfg.smooth)
    n, recs, last_ms = 0, [], None
    try:
        with progress("frames") as bar:
            task = bar.add_task(s.path.name, total=reader.total)
            for frame in reader:
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                if tracker.wants_detection(n):      # in the model thread: it shares the cores with the model
                    tracker.detect(*boxes.find([s], [rgb], n)[0])
                b, ids = tracker.boxes(), [t.id for t in tracker.tracks]
                box_scores = np.array([t.score for t in tracker.tracks])
                pred = predictor.predict_image(rgb, b, cfg.flip)      # every person of the frame in one batch
                # the frame's own time step (a variable-frame-rate video's frames are not 1 / fps apart)
                dt = (reader.time_ms - last_ms) / 1000 if last_ms is not None and reader.time_ms > last_ms else 1 / fps
                last_ms = reader.time_ms
                pred = pred.with_keypoints(tracker.update(pred.keypoints, pred.scores, (w, h), cfg.min_score, dt))
                poses = Poses.from_prediction(pred, predictor.skeleton, box_scores, ids)
                recs.append({"source": str(s.path), "type": "video", "frame": n, "width": w, "height": h,
                             "output": str(s.rel) if cfg.draw else None, "fps": fps,
                             "time_ms": round(reader.time_ms, 3),
                             "persons": poses.to_json(cfg.min_score)})
                writer.put((frame, poses))
                n += 1
                bar.advance(task)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        reader.close()
    if n == 0:
        writer.tmp.unlink(missing_ok=True)
        raise PoserError("video has no frames")
    if cfg.draw:
        check_not_input(dst)
        writer.tmp.replace(dst)
    writer.tmp.unlink(missing_ok=True)      # not drawn: the empty placeholder
    if reader.total and n < reader.total:   # a cut file decodes its first part and ends without an error
        res.warnings.append({"source": str(s.path), "warning": f"only {n} of the {reader.total} frames its header "
                             "announces could be decoded (a truncated file?); the rest is missing"})
        log.warning(f"{s.path}: {res.warnings[-1]['warning']}")
    res.records += recs                     # only a complete video enters the JSON
    res.frames += n
