"""A synthetic figure that walks: the demo's video.

`write_video` slides one still image across the frame, which is right for tests (the same
pixels every frame) but shows a newcomer a random, often contorted, pose frozen in place. Here
the figure is drawn afresh each frame from a gait cycle: upright, a three-quarter view facing
the camera, legs swinging with the knee bending through the swing, arms swinging against the
legs, walking left to right across one fixed background. Same parts, colours and exact
visibility flags as the datasets (`dataset.draw_figure`, `dataset.annotation`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from poser.synth.clips import mp4_writer
from poser.synth.figure import BODY, Canvas, J, annotation, background, draw_figure, face, moved

UP, DOWN, RIGHT = np.array([0.0, -1.0]), np.array([0.0, 1.0]), np.array([1.0, 0.0])


def _limb_dir(a: float) -> np.ndarray:
    """Unit vector `a` radians from straight down, positive towards image right (forward)."""
    return math.cos(a) * DOWN + math.sin(a) * RIGHT


def walking_pose(phase: float, h: float, wf: float = 0.75) -> tuple[np.ndarray, np.ndarray, dict]:
    """Joints (17, 2) of a figure `h` px tall at gait `phase` (radians), pelvis at the origin,
    walking towards image right; view-occluded flags; the drawing geometry."""
    torso, head_r = BODY.torso * h, BODY.head_r * h
    pts = np.zeros((17, 2))
    swing = math.sin(phase)
    for lr, sg in (("left", 1.0), ("right", -1.0)):   # facing the camera: the left side on image right
        pts[J[f"{lr}_hip"]] = sg * RIGHT * BODY.hip * h * wf
        pts[J[f"{lr}_shoulder"]] = UP * torso + sg * RIGHT * BODY.shoulder * h * wf
        thigh = 0.45 * sg * swing                      # the legs swing in opposition
        flex = 0.1 + 0.6 * max(0.0, sg * math.cos(phase))   # the knee bends while its leg swings forward
        pts[J[f"{lr}_knee"]] = pts[J[f"{lr}_hip"]] + _limb_dir(thigh) * BODY.thigh * h
        pts[J[f"{lr}_ankle"]] = pts[J[f"{lr}_knee"]] + _limb_dir(thigh - flex) * BODY.shin * h
        arm = -0.35 * sg * swing + 0.12 * sg           # against the same side's leg, a little out
        pts[J[f"{lr}_elbow"]] = pts[J[f"{lr}_shoulder"]] + _limb_dir(arm) * BODY.upper_arm * h
        pts[J[f"{lr}_wrist"]] = pts[J[f"{lr}_elbow"]] + _limb_dir(arm + 0.35) * BODY.lower_arm * h
    neck_pt = UP * torso
    c = neck_pt + UP * (BODY.neck * h + head_r)
    occl = face(pts, c, UP, head_r, 1.0, wf, yaw=0.25)   # the face turned towards where it walks
    geo = {"head_c": c, "head_r": head_r, "neck": neck_pt, "facing": 1.0,
           "arm_w": BODY.arm_w * h, "leg_w": BODY.leg_w * h}
    return pts, occl, geo


def write_walk_video(path: Path, frames: int = 90, size: tuple[int, int] = (640, 360), fps: float = 30.0,
                     seed: int = 0, body: float = 0.7, period: int = 30) -> np.ndarray:
    """An mp4 of one figure `body` x the frame height tall walking across the frame, a stride
    every `period` frames; returns its COCO keypoints per frame (frames, 17, 3)."""
    w, h = size
    backdrop = background(np.random.default_rng([seed, 0]), w, h, clutter=0.0)
    vw = mp4_writer(path, fps, size)
    tall = body * h
    truth = []
    for f in range(frames):
        pts, occl, geo = walking_pose(2 * math.pi * f / period, tall)
        x = w * (0.15 + 0.7 * f / max(1, frames - 1))
        shift = np.array([x, 0.95 * h - pts[:, 1].max()])    # the lower foot on the ground
        pts = moved(pts, geo, shift)
        cv = Canvas(backdrop.copy())
        draw_figure(cv, np.random.default_rng([seed, 1]), pts, geo, 0)   # the same colours each frame
        vw.write(cv.img)
        truth.append(np.array(annotation(cv.owner, pts, occl, 0, w, h)["keypoints"]).reshape(17, 3))
    vw.release()
    return np.array(truth)
