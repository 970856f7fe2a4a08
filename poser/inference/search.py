"""The person search: find the one person in a whole image with no box given.

Predict with the whole image as the person box (DeepPose's own LSP protocol), then `passes`
times again with the box of the predicted joints: grown wide at first, while the estimate is
rough, and as training boxes are (`PERSON_BOX_MARGIN`) at the last pass, so the last crop is
the kind the model was trained on. An image whose estimate has settled (moved less than
`SETTLED` of the pose's size in a pass) goes straight to that last pass: a quarter fewer
crops on LSP-Extended at the same PCP (measured: README).
"""

from __future__ import annotations

import numpy as np

from poser import geometry as g

SEARCH_PASSES = 3           # passes after the whole-image one (measured: README)
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
