"""The synthetic figure: an articulated body with COCO-17 joints, its random pose, view and
proportions, and its renderer (limbs drawn as thick segments, an ownership map that makes the
visibility flags exact, left limbs warm and right limbs cool)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

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


def joint_parts() -> list[set[int]]:
    own = [set() for _ in COCO17.joints]
    for pi, (_, joints) in enumerate(PARTS):
        for n in joints:
            own[J[n]].add(pi)
    for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"):
        own[J[n]].add(P["torso"])
    for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"):
        own[J[n]].add(P["head"])
    return own


JOINT_PARTS = joint_parts()


@dataclass(frozen=True)
class Body:
    """A figure's mean proportions, as shares of its height (`pose` varies each by +-15%)."""
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


def unit(a: float) -> np.ndarray:
    return np.array([math.sin(a), -math.cos(a)])  # angle from image-up, clockwise


def rot(v: np.ndarray, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def pose(rng: np.random.Generator, h: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Joints (17, 2) of a figure `h` px tall, pelvis at the origin; view-occluded flags."""
    r = rng.random()
    tilt = rng.normal(0, 0.2) if r < 0.7 else rng.uniform(-1.0, 1.0) if r < 0.9 else rng.uniform(-math.pi, math.pi)
    up = unit(tilt)
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
    head_up = unit(tilt + rng.normal(0, 0.25))
    c = neck_pt + head_up * (neck + head_r)
    yaw = rng.uniform(-1, 1) * (1 - wf)         # profile figures turn their face sideways
    occl = face(pts, c, head_up, head_r, s, wf, yaw)
    for lr, sg in side.items():
        out = sg * right
        for top, mid, end, l1, l2, lo, hi, bend in (
            ("shoulder", "elbow", "wrist", ua, la, -0.4, 3.0, 2.6),
            ("hip", "knee", "ankle", ul, ll, -0.35, 1.3, 2.3),
        ):
            a = rng.uniform(lo, hi) if rng.random() < 0.85 else rng.uniform(lo, 1.9)
            d = math.cos(a) * down + math.sin(a) * out
            pts[J[f"{lr}_{mid}"]] = pts[J[f"{lr}_{top}"]] + d * l1
            d2 = rot(d, rng.choice([-1, 1]) * rng.uniform(0, bend) * rng.random())
            pts[J[f"{lr}_{end}"]] = pts[J[f"{lr}_{mid}"]] + d2 * l2
    geo = {"head_c": c, "head_r": head_r, "neck": neck_pt, "facing": s,
           "arm_w": BODY.arm_w * h * rng.uniform(0.7, 1.3), "leg_w": BODY.leg_w * h * rng.uniform(0.7, 1.3)}
    return pts, occl, geo


def face(pts: np.ndarray, c: np.ndarray, head_up: np.ndarray, head_r: float, s: float, wf: float,
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


def moved(pts: np.ndarray, geo: dict, shift: np.ndarray) -> np.ndarray:
    """A pose `shift`ed: its joints returned, its drawing geometry (head, neck) moved in place."""
    geo["head_c"], geo["neck"] = geo["head_c"] + shift, geo["neck"] + shift
    return pts + shift


def colour(rng: np.random.Generator, hue: tuple[int, int] | None = None) -> tuple[int, ...]:
    hh = rng.integers(*hue) if hue else rng.integers(0, 180)
    hsv = np.uint8([[[hh % 180, rng.integers(110, 256), rng.integers(110, 256)]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def background(rng: np.random.Generator, w: int, h: int, clutter: float = 1.0) -> np.ndarray:
    if rng.random() < 0.5:                       # gradient between two colours
        a, b = np.array(colour(rng)), np.array(colour(rng))
        t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
        img = np.broadcast_to(a * (1 - t) + b * t, (h, w, 3)).astype(np.float32)
    else:                                        # blobby texture: upsampled coarse noise
        g = rng.integers(2, 12)
        coarse = rng.uniform(0, 255, (g, g, 3)).astype(np.float32)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img + rng.normal(0, rng.uniform(2, 15), img.shape), 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, int(24 * clutter) + 1)):  # clutter, limb-like bars included
        col, t = colour(rng), int(rng.integers(1, max(2, w // 18)))
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


class Canvas:
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


def draw_figure(cv: Canvas, rng, pts: np.ndarray, geo: dict, fig: int) -> None:
    def oid(part: str) -> int:
        return 1 + fig * PARTS_PER_FIGURE + P[part]

    cols = {"left": colour(rng, (0, 28)), "right": colour(rng, (92, 132))}
    torso_col, head_col = colour(rng), colour(rng, (5, 25))
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


def annotation(owner: np.ndarray, pts: np.ndarray, occl: np.ndarray, fig: int, w: int, h: int) -> dict:
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

