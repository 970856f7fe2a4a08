"""Synthetic COCO-format person keypoint datasets.

Articulated figures (COCO-17 joints) drawn as thick limb segments on cluttered or textured
backgrounds, with random proportions, view (front, back, profile), joint angles, scale,
position, occluders and people partly out of frame. The output is a real COCO dataset:
`<out>/<split>/*.jpg` and `<out>/annotations/person_keypoints_<split>.json`, readable by
pycocotools and by everything in poser that reads COCO.

Visibility flags are exact: every body part and occluder is also drawn into an ownership
map, and a joint is visible (v=2) only where one of its own adjacent parts is on top;
covered joints get v=1, joints outside the image v=0 (with x = y = 0, as COCO stores them).

The person's left limbs are drawn in warm hues and right limbs in cool hues, so left and
right are learnable from one image (on real people, context does this); the torso, head and
background take any colour, and background clutter includes limb-like bars of every hue.
That cue is not mirror-symmetric (a flipped warm limb would be labelled right), so train on
these datasets without flip augmentation (`poser train --flip 0`).

Each image is drawn from its own generator seeded by (seed, image number), so a dataset is
the same for a seed whatever the worker count, and train is a prefix of a larger run's.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from poser.console import progress
from poser.errors import PoserError
from poser.files import atomic_dir, check_replaceable, write_json
from poser.skeletons import COCO17
from poser.synth.figure import OCCLUDER, Canvas, annotation, background, colour, draw_figure, moved, pose


@dataclass
class SynthConfig:
    images: int = 200
    seed: int = 0
    val_fraction: float = 0.2
    min_size: int = 192        # image sides are drawn from [min_size, max_size]
    max_size: int = 320
    max_people: int = 2
    jpeg_quality: int = 90
    clutter: float = 1.0       # 0: plain backgrounds, no occluders (easy, learns in seconds); 1: full
    body: tuple[float, float] = (0.35, 0.9)   # a figure's height, as a share of the image height


def render_image(cfg: SynthConfig, number: int) -> tuple[bytes, int, int, list[dict]]:
    """Image `number` of a dataset: JPEG bytes, width, height, and its annotations
    (without ids)."""
    rng = np.random.default_rng([cfg.seed, number])
    w, h = (int(v) for v in rng.integers(cfg.min_size, cfg.max_size + 1, 2))
    cv = Canvas(background(rng, w, h, cfg.clutter))
    people = 1 + int(rng.integers(0, cfg.max_people)) if rng.random() < 0.35 else 1
    figs = []
    for f in range(people):
        x0, x1 = w * f / people, w * (f + 1) / people   # one horizontal slot each
        body = h * rng.uniform(*cfg.body) / (1 if people == 1 else 1.3)
        pts, occl, geo = pose(rng, body)
        lo, hi = pts.min(0), pts.max(0)
        span = hi - lo
        out = 0.25 if rng.random() < 0.15 else 0.0      # sometimes partly out of frame
        cx = rng.uniform(x0 + span[0] * (0.5 - out), max(x0 + span[0] * (0.5 - out) + 1, x1 - span[0] * (0.5 - out)))
        cy = rng.uniform(span[1] * (0.5 - out), max(span[1] * (0.5 - out) + 1, h - span[1] * (0.5 - out)))
        shift = np.array([cx, cy]) - (lo + hi) / 2
        pts = moved(pts, geo, shift)
        draw_figure(cv, rng, pts, geo, f)
        figs.append((pts, occl, body))
    for pts, _, body in figs:                    # occluders over some joints
        if rng.random() < 0.3 * cfg.clutter:
            c = pts[rng.integers(17)] + rng.normal(0, 0.05 * body, 2)
            ax = (body * rng.uniform(0.08, 0.2), body * rng.uniform(0.08, 0.2))
            col = colour(rng)
            if rng.random() < 0.5:
                quad = [c - ax, [c[0] + ax[0], c[1] - ax[1]], c + ax, [c[0] - ax[0], c[1] + ax[1]]]
                cv.poly(np.array(quad), col, OCCLUDER)
            else:
                cv.circle(c, ax[0], col, OCCLUDER)
    img = cv.img
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (3, 3), 0)
    anns = []
    for f, (pts, occl, _) in enumerate(figs):
        anns.append(annotation(cv.owner, pts, occl, f, w, h))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
    assert ok
    return buf.tobytes(), w, h, anns


def _render_batch(args: tuple[SynthConfig, list[int], list[Path]]) -> list[tuple[int, int, int, list[dict]]]:
    cfg, numbers, paths = args
    cv2.setNumThreads(1)
    out = []
    for n, p in zip(numbers, paths, strict=True):
        data, w, h, anns = render_image(cfg, n)
        p.write_bytes(data)
        out.append((n, w, h, anns))
    return out


SYNTH_NAMES = ("train", "val", "annotations", "cache")    # what a synthetic dataset folder holds


def generate(out: Path, cfg: SynthConfig, overwrite: bool = False, workers: int = 0) -> dict:
    """Write a synthetic COCO-format dataset to `out` (train and val splits); returns a summary.

    The folder appears only when complete; with `overwrite` an existing one is replaced.
    """
    out = Path(out)
    if cfg.images < 2:
        raise PoserError("`images` must be at least 2 (one train and one val image)")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise PoserError("`val_fraction` must be between 0 and 1")
    if out.exists() and not overwrite:
        raise PoserError(f"{out} already exists; pass `overwrite` to replace it")
    if overwrite:
        check_replaceable(out, SYNTH_NAMES)
    n_val = max(1, round(cfg.images * cfg.val_fraction))
    splits = {"train": range(1, cfg.images - n_val + 1), "val": range(cfg.images - n_val + 1, cfg.images + 1)}
    workers = workers or (2 if cfg.images >= 400 else 1)
    summary: dict = {"out": str(out), "seed": cfg.seed, "splits": {}}
    with atomic_dir(out, overwrite=overwrite, known=SYNTH_NAMES) as tmp, progress("images") as bar:
        task = bar.add_task("synth", total=cfg.images)
        for split, numbers in splits.items():
            (tmp / split).mkdir()
            jobs = [list(numbers[i: i + 50]) for i in range(0, len(numbers), 50)]
            args = [(cfg, js, [tmp / split / f"synth_{n:06d}.jpg" for n in js]) for js in jobs]
            results = []
            if workers > 1:
                with ProcessPoolExecutor(workers) as ex:
                    for r in ex.map(_render_batch, args):
                        results += r
                        bar.advance(task, len(r))
            else:
                for a in args:
                    r = _render_batch(a)
                    results += r
                    bar.advance(task, len(r))
            images, anns = [], []
            for n, w, h, img_anns in results:
                images.append({"id": n, "file_name": f"synth_{n:06d}.jpg", "width": w, "height": h})
                for i, a in enumerate(img_anns):  # ids unique across splits
                    anns.append({"id": n * 100 + i + 1, "image_id": n, **a})
            write_json(tmp / "annotations" / f"person_keypoints_{split}.json", {
                "info": {"description": "poser synthetic persons", "seed": cfg.seed},
                "licenses": [],
                "categories": [{"id": 1, "name": "person", "supercategory": "person",
                                "keypoints": list(COCO17.joints),
                                "skeleton": [[a + 1, b + 1] for a, b in COCO17.draw_limbs]}],
                "images": images, "annotations": anns,
            }, indent=None)
            summary["splits"][split] = {"images": len(images), "persons": len(anns)}
    return summary


def one_person(seed: int = 0, side: int = 240, clutter: float = 0.0,
               body: tuple[float, float] = (0.35, 0.9)) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """A synthetic image (BGR, side x side) with exactly one figure, most joints visible,
    `body` x side tall: the image, its keypoints (17, 3) and its person box."""
    cfg = SynthConfig(seed=seed, max_people=1, clutter=clutter, min_size=side, max_size=side, body=body)
    for n in range(1, 500):
        data, _, _, anns = render_image(cfg, n)
        kp = np.array(anns[0]["keypoints"]).reshape(17, 3) if len(anns) == 1 else None
        if kp is not None and (kp[:, 2] == 2).sum() >= 14:
            return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), kp, anns[0]["bbox"]
    raise PoserError(f"no clean one-person figure for seed {seed}")


