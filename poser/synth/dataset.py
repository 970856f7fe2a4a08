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

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from poser.console import progress
from poser.errors import PoserError
from poser.files import atomic_dir, check_replaceable, write_json
from poser.skeletons import COCO17

J = {n: i for i, n in enumerate(COCO17.joints)}
# Body parts: (name, joints it connects). A joint is visible where one of its parts is on top.
PARTS = [
    ("torso", ()), ("head", ()),
    ("left_upper_arm", ("left_shoulder", "left_elbow")),
    ("left_lower_arm", ("left_elbow", "left_wrist")),
    ("right_upper_arm", ("right_shoulder", "right_elbow")),
    ("right_lower_arm", ("right_elbow", "right_wrist")),
    ("left_thigh", ("left_hip", "left_knee")),
    ("left_shin", ("left_knee", "left_ankle")),
    ("right_thigh", ("right_hip", "right_knee")),
    ("right_shin", ("right_knee", "right_ankle")),
]
P = {name: i for i, (name, _) in enumerate(PARTS)}
PARTS_PER_FIGURE = 16  # owner id = 1 + figure * 16 + part; occluders above all figures
OCCLUDER = 255 * PARTS_PER_FIGURE


def _joint_parts() -> list[set[int]]:
    own = [set() for _ in COCO17.joints]
    for pi, (_, joints) in enumerate(PARTS):
        for n in joints:
            own[J[n]].add(pi)
    for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"):
        own[J[n]].add(P["torso"])
    for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"):
        own[J[n]].add(P["head"])
    return own


JOINT_PARTS = _joint_parts()


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


@dataclass(frozen=True)
class Body:
    """A figure's mean proportions, as shares of its height (`_pose` varies each by +-15%)."""
    torso: float = 0.30         # pelvis to neck
    neck: float = 0.04
    head_r: float = 0.065
    upper_arm: float = 0.17
    lower_arm: float = 0.15
    thigh: float = 0.23
    shin: float = 0.23
    hip: float = 0.08           # half the hip width, seen from the front
    shoulder: float = 0.11      # half the shoulder width
    arm_w: float = 0.05         # limb thickness
    leg_w: float = 0.07


BODY = Body()


def _unit(a: float) -> np.ndarray:
    return np.array([math.sin(a), -math.cos(a)])  # angle from image-up, clockwise


def _rot(v: np.ndarray, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _pose(rng: np.random.Generator, h: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Joints (17, 2) of a figure `h` px tall, pelvis at the origin; view-occluded flags."""
    r = rng.random()
    tilt = rng.normal(0, 0.2) if r < 0.7 else rng.uniform(-1.0, 1.0) if r < 0.9 else rng.uniform(-math.pi, math.pi)
    up = _unit(tilt)
    down = -up
    right = np.array([-up[1], up[0]])          # image-right when upright
    s = 1.0 if rng.random() < 0.6 else -1.0     # +1: facing the camera (person's left on image right)
    wf = rng.uniform(0.3, 1.0)                  # apparent width: 1 frontal, small in profile
    k = rng.uniform(0.85, 1.15, size=8)         # per-figure proportions
    torso, neck, head_r = BODY.torso * h * k[0], BODY.neck * h, BODY.head_r * h * k[1]
    ua, la = BODY.upper_arm * h * k[2], BODY.lower_arm * h * k[3]
    ul, ll = BODY.thigh * h * k[4], BODY.shin * h * k[5]
    pts = np.zeros((17, 2))
    side = {"left": s, "right": -s}
    for lr, sg in side.items():
        pts[J[f"{lr}_hip"]] = sg * right * BODY.hip * h * wf * k[6]
        pts[J[f"{lr}_shoulder"]] = up * torso + sg * right * BODY.shoulder * h * wf * k[7]
    neck_pt = up * torso
    head_up = _unit(tilt + rng.normal(0, 0.25))
    c = neck_pt + head_up * (neck + head_r)
    yaw = rng.uniform(-1, 1) * (1 - wf)         # profile figures turn their face sideways
    occl = _face(pts, c, head_up, head_r, s, wf, yaw)
    for lr, sg in side.items():
        out = sg * right
        for top, mid, end, l1, l2, lo, hi, bend in (
            ("shoulder", "elbow", "wrist", ua, la, -0.4, 3.0, 2.6),
            ("hip", "knee", "ankle", ul, ll, -0.35, 1.3, 2.3),
        ):
            a = rng.uniform(lo, hi) if rng.random() < 0.85 else rng.uniform(lo, 1.9)
            d = math.cos(a) * down + math.sin(a) * out
            pts[J[f"{lr}_{mid}"]] = pts[J[f"{lr}_{top}"]] + d * l1
            d2 = _rot(d, rng.choice([-1, 1]) * rng.uniform(0, bend) * rng.random())
            pts[J[f"{lr}_{end}"]] = pts[J[f"{lr}_{mid}"]] + d2 * l2
    geo = {"head_c": c, "head_r": head_r, "neck": neck_pt, "facing": s,
           "arm_w": BODY.arm_w * h * rng.uniform(0.7, 1.3), "leg_w": BODY.leg_w * h * rng.uniform(0.7, 1.3)}
    return pts, occl, geo


def _face(pts: np.ndarray, c: np.ndarray, head_up: np.ndarray, head_r: float, s: float, wf: float,
          yaw: float) -> np.ndarray:
    """Place nose, eyes and ears in `pts` around head centre `c`; returns the view-occluded flags.
    `s` +1 faces the camera, `wf` is the apparent width (1 frontal), `yaw` turns the face."""
    head_right = np.array([-head_up[1], head_up[0]])
    occl = np.zeros(17, bool)
    pts[J["nose"]] = c - head_up * 0.15 * head_r + head_right * yaw * 0.8 * head_r
    for lr, sg in (("left", s), ("right", -s)):
        pts[J[f"{lr}_eye"]] = c + head_up * 0.2 * head_r + head_right * (sg * 0.4 * wf + yaw * 0.6) * head_r
        pts[J[f"{lr}_ear"]] = c + head_right * (sg * 0.95 * wf + yaw * 0.2) * head_r
    if s < 0:                                    # seen from behind: face hidden
        occl[[J["nose"], J["left_eye"], J["right_eye"]]] = True
    elif wf < 0.55:                              # profile: the far eye and ear are hidden
        far = "left" if yaw * s < 0 else "right"
        occl[[J[f"{far}_eye"], J[f"{far}_ear"]]] = True
    return occl


def _moved(pts: np.ndarray, geo: dict, shift: np.ndarray) -> np.ndarray:
    """A pose `shift`ed: its joints returned, its drawing geometry (head, neck) moved in place."""
    geo["head_c"], geo["neck"] = geo["head_c"] + shift, geo["neck"] + shift
    return pts + shift


def _colour(rng: np.random.Generator, hue: tuple[int, int] | None = None) -> tuple[int, ...]:
    hh = rng.integers(*hue) if hue else rng.integers(0, 180)
    hsv = np.uint8([[[hh % 180, rng.integers(110, 256), rng.integers(110, 256)]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _background(rng: np.random.Generator, w: int, h: int, clutter: float = 1.0) -> np.ndarray:
    if rng.random() < 0.5:                       # gradient between two colours
        a, b = np.array(_colour(rng)), np.array(_colour(rng))
        t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
        img = np.broadcast_to(a * (1 - t) + b * t, (h, w, 3)).astype(np.float32)
    else:                                        # blobby texture: upsampled coarse noise
        g = rng.integers(2, 12)
        coarse = rng.uniform(0, 255, (g, g, 3)).astype(np.float32)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img + rng.normal(0, rng.uniform(2, 15), img.shape), 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, int(24 * clutter) + 1)):  # clutter, limb-like bars included
        col, t = _colour(rng), int(rng.integers(1, max(2, w // 18)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        kind = rng.integers(3)
        if kind == 0:
            p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(img, p1, p2, col, t, cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(img, p1, int(rng.integers(2, w // 8)), col, -1 if rng.random() < 0.5 else t, cv2.LINE_AA)
        else:
            p2 = (p1[0] + int(rng.integers(-w // 6, w // 6)), p1[1] + int(rng.integers(-h // 6, h // 6)))
            cv2.rectangle(img, p1, p2, col, -1 if rng.random() < 0.5 else t)
    return img


class _Canvas:
    """Draws each primitive into the image and, with an owner id, into the ownership map."""

    def __init__(self, img: np.ndarray) -> None:
        self.img = img
        self.owner = np.zeros(img.shape[:2], np.int32)

    @staticmethod
    def _xy(p: np.ndarray) -> tuple[int, int]:
        return int(round(p[0] * 16)), int(round(p[1] * 16))   # 4 bits of sub-pixel precision

    def line(self, a, b, width: float, col, oid: int) -> None:
        t = max(1, int(round(width)))
        for tgt, c, aa in ((self.img, col, cv2.LINE_AA), (self.owner, oid, cv2.LINE_8)):
            cv2.line(tgt, self._xy(a), self._xy(b), c, t, aa, shift=4)
            for p in (a, b):                     # round ends, as on a real limb
                cv2.circle(tgt, self._xy(p), int(round(t / 2 * 16)), c, -1, aa, shift=4)

    def circle(self, c, r: float, col, oid: int) -> None:
        for tgt, cc, aa in ((self.img, col, cv2.LINE_AA), (self.owner, oid, cv2.LINE_8)):
            cv2.circle(tgt, self._xy(c), int(round(r * 16)), cc, -1, aa, shift=4)

    def poly(self, pts: np.ndarray, col, oid: int) -> None:
        q = np.round(pts * 16).astype(np.int32)[None]
        cv2.fillPoly(self.img, q, col, cv2.LINE_AA, shift=4)
        cv2.fillPoly(self.owner, q, oid, cv2.LINE_8, shift=4)


def _draw_figure(cv: _Canvas, rng, pts: np.ndarray, geo: dict, fig: int) -> None:
    def oid(part: str) -> int:
        return 1 + fig * PARTS_PER_FIGURE + P[part]

    cols = {"left": _colour(rng, (0, 28)), "right": _colour(rng, (92, 132))}
    torso_col, head_col = _colour(rng), _colour(rng, (5, 25))
    behind = rng.choice(["left", "right", "none"])   # limbs on this side go behind the torso

    def limbs(lr: str) -> None:
        leg, arm = geo["leg_w"], geo["arm_w"]
        for a, b, part, w in (("hip", "knee", "thigh", leg), ("knee", "ankle", "shin", leg * 0.85),
                              ("shoulder", "elbow", "upper_arm", arm), ("elbow", "wrist", "lower_arm", arm * 0.85)):
            col = tuple(int(np.clip(c + rng.integers(-25, 26), 0, 255)) for c in cols[lr])
            cv.line(pts[J[f"{lr}_{a}"]], pts[J[f"{lr}_{b}"]], w, col, oid(f"{lr}_{part}"))

    if behind != "none":
        limbs(behind)
    quad = pts[[J["left_shoulder"], J["right_shoulder"], J["right_hip"], J["left_hip"]]]
    centre = quad.mean(0)
    cv.poly(centre + (quad - centre) * 1.15, torso_col, oid("torso"))
    cv.line(geo["neck"], geo["head_c"], geo["arm_w"] * 1.2, head_col, oid("head"))
    cv.circle(geo["head_c"], geo["head_r"], head_col, oid("head"))
    if geo["facing"] > 0:                        # eyes as small dark dots give the face a front
        for n in ("left_eye", "right_eye"):
            cv.circle(pts[J[n]], max(1.0, geo["head_r"] * 0.12), (30, 30, 30), oid("head"))
    for lr in ("left", "right"):
        if lr != behind:
            limbs(lr)


def render_image(cfg: SynthConfig, number: int) -> tuple[bytes, int, int, list[dict]]:
    """Image `number` of a dataset: JPEG bytes, width, height, and its annotations
    (without ids)."""
    rng = np.random.default_rng([cfg.seed, number])
    w, h = (int(v) for v in rng.integers(cfg.min_size, cfg.max_size + 1, 2))
    cv = _Canvas(_background(rng, w, h, cfg.clutter))
    people = 1 + int(rng.integers(0, cfg.max_people)) if rng.random() < 0.35 else 1
    figs = []
    for f in range(people):
        x0, x1 = w * f / people, w * (f + 1) / people   # one horizontal slot each
        body = h * rng.uniform(*cfg.body) / (1 if people == 1 else 1.3)
        pts, occl, geo = _pose(rng, body)
        lo, hi = pts.min(0), pts.max(0)
        span = hi - lo
        out = 0.25 if rng.random() < 0.15 else 0.0      # sometimes partly out of frame
        cx = rng.uniform(x0 + span[0] * (0.5 - out), max(x0 + span[0] * (0.5 - out) + 1, x1 - span[0] * (0.5 - out)))
        cy = rng.uniform(span[1] * (0.5 - out), max(span[1] * (0.5 - out) + 1, h - span[1] * (0.5 - out)))
        shift = np.array([cx, cy]) - (lo + hi) / 2
        pts = _moved(pts, geo, shift)
        _draw_figure(cv, rng, pts, geo, f)
        figs.append((pts, occl, body))
    for pts, _, body in figs:                    # occluders over some joints
        if rng.random() < 0.3 * cfg.clutter:
            c = pts[rng.integers(17)] + rng.normal(0, 0.05 * body, 2)
            ax = (body * rng.uniform(0.08, 0.2), body * rng.uniform(0.08, 0.2))
            col = _colour(rng)
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
        anns.append(_annotation(cv.owner, pts, occl, f, w, h))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
    assert ok
    return buf.tobytes(), w, h, anns


def _annotation(owner: np.ndarray, pts: np.ndarray, occl: np.ndarray, fig: int, w: int, h: int) -> dict:
    base = 1 + fig * PARTS_PER_FIGURE
    kps = np.zeros((17, 3))
    for j, (x, y) in enumerate(pts):
        xi, yi = int(round(x)), int(round(y))
        if not (0 <= xi < w and 0 <= yi < h):
            continue                              # out of frame: not labelled
        on_top = owner[yi, xi] - base
        visible = on_top in JOINT_PARTS[j] and not occl[j]
        kps[j] = (round(float(x), 2), round(float(y), 2), 2 if visible else 1)
    mask = (owner >= base) & (owner < base + PARTS_PER_FIGURE)
    ys, xs = np.nonzero(mask)
    bbox = [0.0, 0.0, 0.0, 0.0] if len(xs) == 0 else [
        float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    return {
        "category_id": 1, "iscrowd": 0, "bbox": bbox, "area": float(mask.sum()),
        "num_keypoints": int((kps[:, 2] > 0).sum()), "keypoints": kps.reshape(-1).tolist(),
        "segmentation": [],
    }


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
        raise PoserError("--images must be at least 2 (one train and one val image)")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise PoserError("--val-fraction must be between 0 and 1")
    if out.exists() and not overwrite:
        raise PoserError(f"{out} already exists; pass --overwrite to replace it")
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


def mp4_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An open OpenCV mp4 writer for the synthetic clips (`size` is width, height)."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not vw.isOpened():
        raise PoserError(f"OpenCV cannot write {path}")
    return vw


def write_video(path: Path, frames: int = 60, size: tuple[int, int] = (640, 360), fps: float = 30.0,
                seed: int = 0, step: int = 3, side: int = 240, origin: tuple[int, int] = (100, 60)) -> np.ndarray:
    """An mp4 of one synthetic figure (`one_person(seed, side)`) starting at `origin` and moving
    right by `step` px a frame on a grey background; returns its keypoints per frame (frames, 17, 3)."""
    img, kp, _ = one_person(seed, side=side)
    h, w = img.shape[:2]
    ox, oy = origin
    vw = mp4_writer(path, fps, size)
    truth = []
    for f in range(frames):
        x0 = min(ox + step * f, size[0] - w)
        canvas = np.full((size[1], size[0], 3), 127, np.uint8)
        canvas[oy: oy + h, x0: x0 + w] = img
        vw.write(canvas)
        truth.append(kp + [x0, oy, 0])
    vw.release()
    return np.array(truth)


def write_crossing_video(path: Path, frames: int = 50, size: tuple[int, int] = (640, 400), fps: float = 12.0,
                         seeds: tuple[int, int] = (11, 12), side: int = 200, step: int = 8,
                         rows: tuple[int, int] = (10, 120)) -> np.ndarray:
    """An mp4 of two synthetic figures (`one_person(seed, side)`) that walk towards each other
    and cross: the first starts at the left in row `rows[0]` and moves right `step` px a
    frame, the second starts at the right in row `rows[1]` and moves left (drawn over the
    first where they overlap). Returns their keypoints per frame (frames, 2, 17, 3)."""
    figs = [one_person(s, side=side)[:2] for s in seeds]
    vw = mp4_writer(path, fps, size)
    truth = []
    for f in range(frames):
        canvas = np.full((size[1], size[0], 3), 127, np.uint8)
        xs = (min(20 + step * f, size[0] - side), max(size[0] - side - 20 - step * f, 0))
        for (img, _), x0, y0 in zip(figs, xs, rows, strict=True):
            canvas[y0: y0 + side, x0: x0 + side] = img
        vw.write(canvas)
        truth.append([kp + [x0, y0, 0] for (_, kp), x0, y0 in zip(figs, xs, rows, strict=True)])
    vw.release()
    return np.array(truth)
