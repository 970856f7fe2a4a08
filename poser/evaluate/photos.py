"""The photo protocols of `poser eval`: people found on whole photos by a detector (or --boxes),
or by the person search from each whole photo (DeepPose's LSP protocol)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poser.console import log, progress
from poser.data.datasets import open_dataset
from poser.detect.boxes import Detections, read_detections, select
from poser.evaluate.config import EvalConfig, Split
from poser.imageio import read_rgb
from poser.inference.assemble import load_detector
from poser.inference.poses import Poses, coco_results
from poser.inference.predictor import Predictor


def predict_detected_people(cfg: EvalConfig, predictor: Predictor, data: Split) -> tuple[list | None, list[dict]]:
    """COCO's own protocol: poses on detected person boxes (a --boxes file or the detector).
    Returns the raw detections (detector only) and the poses as COCO keypoint results."""
    image_ids = set(data.ids.tolist())
    if cfg.detector:
        return detect_photos(cfg, predictor, data.root, image_ids)
    dets = read_detections(Path(cfg.boxes), cfg.person_threshold, cfg.max_people)
    if dets.skipped:
        log.warning(f"--boxes {cfg.boxes}: skipped {len(dets.skipped)} invalid detection(s)")
    files, ids = image_files(data.root, cfg.split), dets.ids()
    if not any(i in ids or dets.has(files[i].name) for i in image_ids if i in files):
        log.warning(f"--boxes {cfg.boxes} has no detection for any photo of split {cfg.split!r} (entries match "
                    "by image_id or file_name): every person counts as missed")
    return None, predict_detections(predictor, data.root, cfg.split, dets, cfg.flip, image_ids)


def detect_photos(cfg: EvalConfig, predictor: Predictor, root: Path, image_ids: set[int],
                  batch_size: int = 4) -> tuple[list[dict], list[dict]]:
    """The built-in person detector, then the pose model on its boxes, on the evaluated photos
    (each decoded once). Returns the raw detections (COCO results with image_id, as a --boxes
    file holds them) and the poses as COCO keypoint results."""

    detector = load_detector(cfg.detector, cfg.detector_weights, predictor.device, cfg.person_threshold)
    files = image_files(root, cfg.split)
    todo = sorted(i for i in image_ids if i in files)
    raw: list[dict] = []
    out: list[dict] = []
    with progress("images") as bar:
        task = bar.add_task(f"detect ({cfg.detector}) + pose", total=len(todo))
        for c in range(0, len(todo), batch_size):
            chunk = [(i, read_rgb(files[i])) for i in todo[c: c + batch_size]]
            ok = [(i, im) for i, im in chunk if im is not None]
            found = detector([im for _, im in ok])
            people = [select(f, cfg.person_threshold, cfg.max_people) for f in found]     # as a --boxes file is read
            preds = predictor.predict_images([im for _, im in ok], [b for b, _ in people], cfg.flip)
            for (i, _), f, (_, sc), p in zip(ok, found, people, preds, strict=True):
                raw += [dict(d, image_id=i) for d in f]
                out += Poses.from_prediction(p, predictor.skeleton, sc).to_coco(i)
            bar.advance(task, len(chunk))
    return raw, out


def predict_detections(predictor: Predictor, root: Path, split: str, dets: Detections, flip: bool,
                       image_ids: set[int]) -> list[dict]:
    """Keypoints for every detected person box of the evaluated images, as COCO results
    scored by pose score x box score (COCO ranks by person score)."""
    per_image = {i: dets.lookup(i) for i in sorted(dets.ids() & image_ids)}
    per_image = {i: b for i, b in per_image.items() if len(b[0])}
    files = image_files(root, split)
    out = []
    with progress("images") as bar:
        task = bar.add_task("detections", total=len(per_image))
        for iid, (boxes, box_scores) in per_image.items():
            img = read_rgb(files[iid]) if iid in files else None
            if img is None:
                log.warning(f"skipped: image {iid} is unreadable")
                continue
            out += Poses.from_prediction(predictor.predict_image(img, boxes, flip), predictor.skeleton,
                                         box_scores).to_coco(iid)
            bar.advance(task)
    return out


def image_files(root: Path, split: str) -> dict[int, Path]:
    """Image id -> photo path of a split (for the protocols that run on the photos)."""
    inst = open_dataset(root, split)
    return {int(i): inst.image_root / f for i, f in zip(inst.image_ids, inst.files, strict=True)}


def search_photos(predictor: Predictor, root: Path, split: str, image_ids: np.ndarray, passes: int, flip: bool,
                  batch_size: int = 16) -> list[dict]:
    """One person per photo, found by the Predictor's person search from the whole photo (no
    boxes: DeepPose's LSP protocol), as COCO keypoint results."""
    files = image_files(root, split)
    todo = list(dict.fromkeys(int(i) for i in image_ids))
    out = []
    with progress("images") as bar:
        task = bar.add_task("search", total=len(todo))
        for a in range(0, len(todo), batch_size):
            batch = [(iid, read_rgb(files[iid]) if iid in files else None) for iid in todo[a: a + batch_size]]
            for iid, img in batch:
                if img is None:
                    log.warning(f"skipped: image {iid} is unreadable (its persons count as missed)")
            batch = [(iid, img) for iid, img in batch if img is not None]
            if batch:
                found = predictor.find_person([img for _, img in batch], passes, flip)
                for (iid, _), r in zip(batch, found, strict=True):
                    out += coco_results(np.array([iid]), r.keypoints, r.scores)
            bar.advance(task, len(todo[a: a + batch_size]))
    return out
