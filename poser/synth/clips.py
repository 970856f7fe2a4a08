"""Synthetic test videos: one figure walking, two figures crossing (tracking tests and benches)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from poser.errors import PoserError
from poser.synth.dataset import one_person


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

