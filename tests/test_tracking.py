"""A track's box through a clip: it must keep room for the whole body (issue 26: a football
clip's box ended at the knees by frame 4 and the ankles were drawn at knee height).

The model is simulated the way a real one fails at a crop's edge: joints well inside the model's
crop (the box grown to a square x the codec's margin) are found; within `EDGE` of the crop's
edge it is unsure of them (low score, the position still right), and a joint outside the crop
is put on its edge with a low score, the way a regressor that only sees the crop answers. And
like a real model on small, blurred feet, it is never sure of the ankles (score 0.15, under the
drawing threshold, wherever they are): the box must not be drawn from the sure joints alone.
"""

import numpy as np

from poser import geometry as g
from poser.codec import MARGIN
from poser.skeletons import LSP14
from poser.video.tracking import GROW_CAP, Tracker

EDGE = 0.08             # of the crop side: the band where the simulated model is unsure
MIN_SCORE = 0.2
FRAME = np.array([1280, 720])
ANKLES = [LSP14.joints.index(j) for j in ("right_ankle", "left_ankle")]


def _figure(frame: int, start: float = 150.0, growth: float = 1.04, foot=(320.0, 330.0)) -> np.ndarray:
    """LSP-14 joints (14, 2) of a standing figure whose height grows `growth` x per frame (it
    walks toward the camera), its feet on the ground line at `foot`."""
    h = start * growth ** frame
    x, y = foot[0], foot[1] + 2.0 * frame     # the ground line comes down the frame as it nears
    # fractions of the height above the feet, and x offsets as fractions of the height
    up = {"right_ankle": 0.0, "right_knee": 0.28, "right_hip": 0.52, "left_hip": 0.52, "left_knee": 0.28,
          "left_ankle": 0.0, "right_wrist": 0.5, "right_elbow": 0.65, "right_shoulder": 0.82,
          "left_shoulder": 0.82, "left_elbow": 0.65, "left_wrist": 0.5, "neck": 0.86, "head_top": 1.0}
    side = {"right_ankle": -0.08, "right_knee": -0.07, "right_hip": -0.06, "left_hip": 0.06, "left_knee": 0.07,
            "left_ankle": 0.08, "right_wrist": -0.2, "right_elbow": -0.17, "right_shoulder": -0.11,
            "left_shoulder": 0.11, "left_elbow": 0.17, "left_wrist": 0.2, "neck": 0.0, "head_top": 0.0}
    return np.array([[x + side[j] * h, y - up[j] * h] for j in LSP14.joints])


def _model(truth: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The simulated model's joints (14, 2) and scores (14,) for one person box."""
    center, side = g.box_to_square(box[None], MARGIN)
    lo, hi = center[0] - side[0] / 2, center[0] + side[0] / 2
    inside = ((truth >= lo) & (truth <= hi)).all(-1)
    sure = ((truth >= lo + EDGE * side[0]) & (truth <= hi - EDGE * side[0])).all(-1)
    coords = np.clip(truth, lo, hi)
    scores = np.where(sure, 0.8, np.where(inside, 0.1, 0.05))
    scores[ANKLES] = np.minimum(scores[ANKLES], 0.15)
    return coords, scores


def _follow(frames: int, every: int = 10, **figure) -> list[int]:
    """Joints outside the track's box in each frame: detections every `every` frames (annotate's
    default), between them the track follows its own poses (the simulated model's)."""
    tracker = Tracker(max_people=1, every=every)
    lost = []
    for f in range(frames):
        truth = _figure(f, **figure)
        if tracker.wants_detection(f):      # a detector that is always right, as annotate runs it
            tracker.detect(g.keypoint_box(np.concatenate([truth, np.ones((14, 1))], -1)[None],
                                          g.PERSON_BOX_MARGIN), np.array([0.9]))
        box = tracker.boxes()[0]
        lo, hi = box[:2], box[:2] + box[2:]
        in_frame = ((truth >= 0) & (truth <= FRAME)).all(-1)       # the head leaves the frame at the end
        lost.append(int((in_frame & ~((truth >= lo) & (truth <= hi)).all(-1)).sum()))
        coords, scores = _model(truth, box)
        tracker.update(coords[None], scores[None], tuple(FRAME), MIN_SCORE, 1 / 30)
    return lost


def test_a_figure_walking_toward_the_camera_keeps_its_legs_in_the_box():
    # With annotate's detection rounds (every 10 frames) and with the person search alone (one
    # detection, then the track follows its poses): every joint in the frame stays in the box
    # while the figure grows 3.2x. The box of the sure joints lost both ankles from frame 1 on.
    for every in (10, None):
        lost = _follow(30, every)
        assert max(lost) == 0, (every, lost)


def test_between_detection_rounds_a_box_grows_at_most_grow_cap():
    # A pose drawn toward a second person (its ankles on the figure below, as when two people
    # cross): the box may not follow it past GROW_CAP x the detected box.
    tracker = Tracker(max_people=1, every=8)
    truth = _figure(0)
    detected = g.keypoint_box(np.concatenate([truth, np.ones((14, 1))], -1)[None], g.PERSON_BOX_MARGIN)
    tracker.detect(detected, np.array([0.9]))
    slid = truth.copy()
    slid[ANKLES, 1] += 600                  # far below, on someone else
    for _ in range(5):
        tracker.update(slid[None], np.full((1, 14), 0.8), tuple(FRAME), MIN_SCORE, 1 / 30)
    assert tracker.boxes()[0][3] <= GROW_CAP * detected[0, 3] + 1e-6
