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

import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from poser.console import log, progress
from poser.detect.boxes import Boxes, Detections, read_detections, select
from poser.errors import PoserError
from poser.files import IMAGE_EXT, VIDEO_EXT, atomic_path, check_not_input, temp_prefix, write_json
from poser.imageio import read_rgb, truncated_jpeg
from poser.inference.assemble import load_detector, load_predictor
from poser.inference.poses import MIN_SCORE, Poses
from poser.inference.predictor import Predictor
from poser.inference.search import SEARCH_PASSES, scene_starts
from poser.runs import check_run_name, check_writable, new_run_dir
from poser.version import __version__
from poser.video.io import FrameReader, FrameWriter
from poser.video.tracking import Tracker

DETECT_EVERY = 10       # video frames between detector runs (a guess: not yet measured on real footage)



@dataclass
class AnnotateConfig:
    inputs: list[str]
    weights: str | None = None          # None: the shipped model
    device: str = "auto"
    stages: int | None = None           # cascade: run only the first N stages
    out: str | None = None              # the output folder; None: runs/annotate/<name>
    name: str | None = None             # ... exp1, exp2, ... when None
    boxes: str | None = None            # COCO-style detections: [{bbox, score, file_name | image_id}]
    person_threshold: float = 0.5       # detections (file or detector) below are dropped
    detector: str | None = None         # a built-in person detector (poser.detect.detectors)
    detector_weights: str | None = None
    max_people: int = 20                # per image or frame, best first
    detect_every: int = DETECT_EVERY    # video: detector every N frames (and when a track is lost)
    save_boxes: str | None = None       # write the boxes used (the detector's) in the --boxes format
    min_score: float = MIN_SCORE        # joints below are not drawn, nor visible in the JSON
    smooth: bool = False                # One-Euro filter on video keypoints
    flip: bool = False
    batch_size: int = 16
    draw: bool = True                   # write annotated copies (JSON is always written)
    search_passes: int = SEARCH_PASSES  # without boxes: person-search passes after the whole-image one
    runtime: str = "auto"               # what runs the network (runtime/choice.py)
    precision: str = "auto"


@dataclass
class Source:
    path: Path
    kind: str                           # "image" or "video"
    rel: Path                           # output name, relative to the output folder


@dataclass
class Result:
    out: Path | None = None             # the output folder
    records: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)     # annotated, but with a caveat
    frames: int = 0
    seconds: float = 0.0


def collect(inputs: list[str], out_dir: Path | None = None) -> tuple[list[Source], list[dict]]:
    """Expand files and folders (recursively, sorted) into sources; problems as failures.
    A folder's files are named below the folder's own name ('.' and '..' by the folders they
    are); `out_dir` and earlier annotate outputs inside an input folder are not inputs."""
    sources, failed = [], []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = _media_files(p, out_dir)
            if not files:
                failed.append({"source": str(p), "error": "folder has no images or videos"})
            for f in files:
                sources.append(_source(f, Path(p.resolve().name or "root") / f.relative_to(p)))
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


def _media_files(folder: Path, out_dir: Path | None) -> list[Path]:
    """Images and videos below `folder`, sorted, skipping `out_dir` and any folder holding an
    annotate run's keypoints.json (annotating `.` twice must not annotate the first run's output)."""
    skip = out_dir.resolve() if out_dir is not None else None
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        if here.resolve() == skip or _annotate_output(here):
            dirnames[:] = []
            continue
        dirnames.sort()
        found += [here / f for f in filenames if Path(f).suffix.lower() in IMAGE_EXT | VIDEO_EXT]
    return sorted(found)


def _annotate_output(folder: Path) -> bool:
    try:
        with open(folder / "keypoints.json", "rb") as f:
            return b'"poser-keypoints/' in f.read(64)
    except OSError:
        return False


def _source(path: Path, rel: Path) -> Source:
    kind = "video" if path.suffix.lower() in VIDEO_EXT else "image"
    return Source(path, kind, rel.with_suffix(".mp4") if kind == "video" else rel)


class PersonBoxes:
    """Where a run's person boxes come from: a --boxes file, a built-in detector, or neither
    (then one person per image, found by the Predictor's person search). Detector output
    goes through the same filter as a file (`detections.select`), and what was used is kept
    in `saved` in the --boxes format, so `--save-boxes` makes the run repeatable."""

    def __init__(self, cfg: AnnotateConfig, predictor: Predictor, detector=None) -> None:
        """`detector`: any callable from RGB images to lists of detections in the --boxes
        format (e.g. a `poser.detect.detectors.PersonDetector`); default: cfg's --boxes or --detector."""
        self.cfg, self.predictor = cfg, predictor
        self.file: Detections | None = None
        self.detector = detector
        self.saved: list[dict] = []
        if cfg.boxes:
            self.file = read_detections(Path(cfg.boxes), cfg.person_threshold, cfg.max_people)
            if self.file.skipped:
                log.warning(f"--boxes {cfg.boxes}: skipped {len(self.file.skipped)} invalid detection(s) "
                            f"(index {', '.join(map(str, self.file.skipped[:10]))})")
        elif cfg.detector and detector is None:
            self.detector = load_detector(cfg.detector, cfg.detector_weights, predictor.device, cfg.person_threshold)

    @property
    def only_search(self) -> bool:
        """No boxes at all: every image and video gets the person search."""
        return self.file is None and self.detector is None

    def uses_search(self, src: Source) -> bool:
        """Whether this source's person is found by the person search: no boxes at all, or a
        video that the --boxes file has no entry for."""
        return self.only_search or (self.file is not None and src.kind == "video"
                                    and not self.file.has(src.path.name))

    def periodic(self, src: Source) -> bool:
        """Whether a video's boxes are looked for every N frames (a detector, or a saved
        detector run) rather than only to start and restart tracks."""
        return self.detector is not None or (self.file is not None and self.file.has_frames(src.path.name))

    def find(self, srcs: list[Source], images: list[np.ndarray], frame: int | None = None) -> list[Boxes]:
        """Person boxes of images (frame None) or of one video frame."""
        if self.detector is not None:
            out = []
            for s, found in zip(srcs, self.detector(images), strict=True):
                b, sc = select(found, self.cfg.person_threshold, self.cfg.max_people)
                extra = {} if frame is None else {"frame": frame}
                self.saved += [{"file_name": s.path.name, **extra, "bbox": [float(v) for v in bb],
                                "score": float(c), "category_id": 1} for bb, c in zip(b, sc, strict=True)]
                out.append((b, sc))
            return out
        return [self._searched(im, frame is not None) if self.uses_search(s) else
                self.file.lookup(s.path.name, frame or 0) for s, im in zip(srcs, images, strict=True)]

    def _searched(self, image: np.ndarray, scene: bool) -> Boxes:
        """The person search's box: from the whole image for a photo (one person, as LSP's
        protocol), from the scene's starts for a video frame, keeping the most prominent person
        (inference/search.py)."""
        starts = [scene_starts(image)] if scene else None
        found = self.predictor.find_person([image], self.cfg.search_passes, self.cfg.flip, starts)[0]
        return found.boxes, np.ones(1)


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
        raise PoserError("give boxes (--boxes) or a detector (--detector), not both")
    missing = [i for i in cfg.inputs if not Path(i).exists()]
    if missing and len(missing) == len(cfg.inputs):
        raise PoserError(f"no such file or folder: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    check_run_name(cfg.name)
    out = Path(out_dir) if out_dir is not None else Path(cfg.out) if cfg.out else None
    check_outputs(cfg, out)


def check_outputs(cfg: AnnotateConfig, out_dir: Path | None) -> None:
    """Before any work: the files written at the end must be writable as files (a folder in the
    way would lose the whole run's results after all the work)."""
    for f in (out_dir and out_dir / "keypoints.json", Path(cfg.save_boxes) if cfg.save_boxes else None):
        if f is not None and f.is_dir():
            raise PoserError(f"{f} is a folder: annotate writes a file there; nothing was done (choose another)")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise PoserError(f"--out {out_dir} is a file, not a folder; nothing was done")


def _annotate(cfg: AnnotateConfig, predictor: Predictor, out_dir: Path, boxes: PersonBoxes) -> Result:
    sources, failed = collect(cfg.inputs, out_dir)
    keep_inputs(sources, out_dir)
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
        _write_json(cfg, predictor, out_dir, boxes, res)
    return res


def keep_inputs(sources: list[Source], out_dir: Path) -> None:
    """An output never replaces an input nor a file poser did not write: a source whose output
    path is an input's (`--out` is the inputs' own folder) or another existing file that no
    earlier run into `out_dir` wrote (its keypoints.json lists what it wrote) is written beside
    it as `<name>.annotated<ext>` (`_2`, ... if that is taken too), and said once."""
    inputs = {s.path.resolve() for s in sources}
    ours = _written_before(out_dir)
    taken = {(out_dir / s.rel).resolve() for s in sources}
    moved = []
    for s in sources:
        dst = (out_dir / s.rel).resolve()
        if dst in inputs or (dst.exists() and dst not in ours):
            base, n = s.rel.with_name(f"{s.rel.stem}.annotated{s.rel.suffix}"), 1
            s.rel = base
            while (out_dir / s.rel).resolve() in taken or ((out_dir / s.rel).exists()
                                                           and (out_dir / s.rel).resolve() not in ours):
                n += 1
                s.rel = base.with_name(f"{base.stem}_{n}{base.suffix}")
            taken.add((out_dir / s.rel).resolve())
            moved.append(s)
    if moved:
        log.warning(f"--out holds the inputs or other files: {len(moved)} annotated cop"
                    f"{'y' if len(moved) == 1 else 'ies'} written beside them as <name>.annotated<ext> (e.g. "
                    f"{moved[0].rel}); no input and no file poser did not write is replaced")


def _written_before(out_dir: Path) -> set[Path]:
    """The annotated copies an earlier run into `out_dir` wrote, as its keypoints.json lists them."""
    try:
        doc = json.loads((out_dir / "keypoints.json").read_text())
        return {(out_dir / r["output"]).resolve() for r in doc.get("items", []) if isinstance(r, dict)
                and isinstance(r.get("output"), str)}
    except (OSError, ValueError, TypeError, AttributeError):
        return set()


def _write_json(cfg: AnnotateConfig, predictor: Predictor, out_dir: Path, boxes: PersonBoxes, res: Result) -> None:
    if cfg.save_boxes:
        write_json(Path(cfg.save_boxes), boxes.saved, indent=None)
    sk = predictor.skeleton
    model = predictor.spec.summary() | {"runtime": predictor.runtime}
    write_json(out_dir / "keypoints.json", {
        "format": "poser-keypoints/1", "poser_version": __version__, "model": model,
        "skeleton": {"name": sk.name, "joints": list(sk.joints), "limbs": [list(lb) for lb in sk.draw_limbs]},
        "items": _earlier_records(out_dir, model, res) + res.records, "failed": res.failed,
        "warnings": res.warnings,
    }, indent=None)


def _earlier_records(out_dir: Path, model: dict, res: Result) -> list[dict]:
    """What an earlier run of the same model into `out_dir` found for sources this run did not
    annotate (not given, or failed now) and whose annotated copy is still there: a second run,
    failed or partial, never takes the first run's results out of the folder's keypoints.json."""
    try:
        doc = json.loads((out_dir / "keypoints.json").read_text())
        items = doc["items"] if doc.get("model") == model else []
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []
    done = {r["source"] for r in res.records}
    return [r for r in items if isinstance(r, dict) and r.get("source") not in done
            and (r.get("output") is None or (out_dir / str(r["output"])).is_file())]


def _report(f: dict) -> None:
    log.error(f"failed: {f['source']}: {f['error']}")


# --- images ---------------------------------------------------------------------------------

def _images(cfg, predictor: Predictor, sources: list[Source], boxes, out_dir: Path, res: Result) -> None:
    """Batches of images: the next batch is read on I/O threads while the model runs, and
    annotated copies are drawn and written on them too."""
    def read(s: Source) -> np.ndarray | None:
        return read_rgb(s.path)

    def write(s: Source, img: np.ndarray, poses: Poses) -> str | None:
        """The annotated copy; an error (full disk, a name too long) as one line naming the file."""
        canvas = poses.draw(cv2.cvtColor(img, cv2.COLOR_RGB2BGR), cfg.min_score, boxes=not boxes.only_search)
        dst = out_dir / s.rel
        ok, buf = cv2.imencode(dst.suffix if dst.suffix.lower() in IMAGE_EXT else ".jpg", canvas)
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dst) as tmp:
                tmp.write_bytes(buf.tobytes())
        except (OSError, PoserError) as e:
            return f"{dst}: {e.strerror or e}" if isinstance(e, OSError) else str(e)
        return None

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
                writes.append((res.records[-1], io.submit(write, s, im, poses)))
        res.frames += len(ok)

    def settle(writes: list) -> None:
        """A copy that could not be written moves its record to `failed`; the rest still runs."""
        for rec, f in writes:
            err = f.result()
            if err is not None:
                res.records[:] = [r for r in res.records if r is not rec]
                res.failed.append({"source": rec["source"], "error": f"could not write the annotated copy: {err}"})
                _report(res.failed[-1])
        writes.clear()

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
                settle(writes)
                raise
            bar.advance(task, len(chunk))
        settle(writes)


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
                pred = pred.with_coords(tracker.update(pred.coords, pred.score, (w, h), cfg.min_score, dt))
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
