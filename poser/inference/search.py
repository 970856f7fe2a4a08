"""The person search: find the one person in a whole image with no box given.

Predict with the whole image as the person box (DeepPose's own LSP protocol), then `passes`
times again with the box of the predicted joints: grown wide at first, while the estimate is
rough, and as training boxes are (`PERSON_BOX_MARGIN`) at the last pass, so the last crop is
the kind the model was trained on. An image whose estimate has settled (moved less than
`SETTLED` of the pose's size in a pass) goes straight to that last pass: a quarter fewer
crops on LSP-Extended at the same PCP (measured: docs).

A scene (a video frame of a street or a pitch) holds several people, and from the whole frame
the model may settle on any of them, often a small one in the middle distance. There the search
starts from several boxes (`scene_starts`: the whole frame and square windows along its longer
side, where a person near the camera fills one) and keeps the most prominent person found:
the largest pose times its mean joint score (`prominence`).
"""

from __future__ import annotations

import numpy as np

from poser import geometry as g

SEARCH_PASSES = 3           # passes after the whole-image one (measured: docs)
FIRST_MARGIN = 0.4          # the first searched box is grown this much a side ...
SETTLED = 0.12              # mean joint move / pose diagonal under which a search skips to its last pass
MIN_SIDE = 8.0              # px: a searched box is never thinner (a zero-size crop has no scale)


def search_margin(k: int, passes: int) -> float:
    """Growth a side of pass k's box (of `passes`): ... narrowing linearly to the training
    boxes' margin at the last pass (a first box cut at the knees cannot find the ankles)."""
    if passes <= 1 or k >= passes - 1:
        return g.PERSON_BOX_MARGIN
    return FIRST_MARGIN + (g.PERSON_BOX_MARGIN - FIRST_MARGIN) * k / (passes - 1)


def search_box(coords: np.ndarray, margin: float = g.PERSON_BOX_MARGIN) -> np.ndarray:
    """(4,) xywh person box from one pose (K, 2): the extent of all its joints (not only the
    confident ones: a low-scored ankle still says where the legs go) grown by `margin` of its
    size on each side."""
    kp = np.concatenate([coords, np.ones((len(coords), 1))], -1)[None]
    box = g.keypoint_box(kp, margin)[0]
    grow = np.maximum(MIN_SIDE - box[2:], 0)           # a collapsed pose: a small box, never 0
    return np.concatenate([box[:2] - grow / 2, box[2:] + grow])


def whole_image_box(image: np.ndarray) -> np.ndarray:
    """(1, 4) xywh: the whole image as the person box."""
    return np.array([[0.0, 0.0, image.shape[1], image.shape[0]]])


def moved(before: np.ndarray, after: np.ndarray) -> float:
    """How far a pass moved one pose's joints (K, 2): the mean move over the pose's diagonal."""
    box = search_box(before, 0.0)
    return float(np.linalg.norm(after - before, axis=-1).mean() / max(np.hypot(box[2], box[3]), 1e-6))


def next_pass(k: int, passes: int, move: float) -> int | None:
    """The pass after pass k of `passes` for an image whose last pass moved it `move`: the
    next one, the last one once settled, None when k was the last."""
    if k >= passes - 1:
        return None
    return passes - 1 if move < SETTLED else k + 1


def scene_starts(image: np.ndarray) -> np.ndarray:
    """(S, 4) xywh boxes a scene's search starts from: the whole image and, for an image more
    than 1.2x as long as it is wide, squares of its shorter side at the start, middle and end of
    its longer side (a person near the camera is about as tall as the frame)."""
    h, w = image.shape[:2]
    boxes = [[0.0, 0.0, float(w), float(h)]]
    side, long = min(w, h), max(w, h)
    if long > 1.2 * side:
        for f in (0.0, 0.5, 1.0):
            at = f * (long - side)
            boxes.append([at, 0.0, side, side] if w > h else [0.0, at, side, side])
    return np.array(boxes)


def prominence(coords: np.ndarray, scores: np.ndarray, shape: tuple[int, ...]) -> float:
    """How prominent one found person (K, 2) px, scores (K,) is in an image of `shape`: the
    side of the pose's box (the square root of its area) over the image's, times the mean joint
    score (a large pose the model is unsure of, spread over the frame, does not win)."""
    box = search_box(coords, 0.0)
    size = np.sqrt(max(box[2], 1.0) * max(box[3], 1.0) / (shape[0] * shape[1]))
    return float(min(size, 1.0) * np.mean(scores))
