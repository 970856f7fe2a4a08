"""Videos: the threaded frame reader and writer, and following people through the frames
(the tracker, its IoU association, One-Euro smoothing).

Each person is a `Track`. Between detections a track's box follows its own keypoints of the
previous frame (DeepPose needs a box, and the last pose is the best guess of the next): every
joint of it, the unsure ones too, so that feet the model scores low (small, blurred, or pressed
on the crop's edge) still keep room for the legs, and at most `GROW_CAP` x the size of the box
the track was last detected with, so that a pose drawn toward a second person cannot carry its
box away (`next_box`); a
detection round (every N frames, on the first frame, and whenever a track gets lost) matches
boxes to tracks by IoU, refreshes matched tracks, starts tracks for new people and ends lost
tracks nobody found again. A track whose pose stays implausible for `MAX_MISSES` frames ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from poser import geometry as g

MATCH_IOU = 0.3         # a detection continues a track when their boxes overlap at least this much
MAX_MISSES = 5          # frames a track may go without a plausible pose before it ends
SAME_PERSON = 0.1       # two tracks whose poses differ by less than this x box side are one person
GROW_CAP = 1.5          # a track's box side is at most this x its last detected box's


class OneEuro:
    """One-Euro filter (Casiez et al., CHI 2012) on arrays: smooths jitter at low speed and
    follows fast motion with little lag. Cut-offs in Hz, `beta` per px/s."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.02, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x = self.dx = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
        tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x
        dx = (x - self.x) / dt
        self.dx = self.dx + self._alpha(self.d_cutoff, dt) * (dx - self.dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self.dx)
        self.x = self.x + self._alpha(cutoff, dt) * (x - self.x)
        return self.x.copy()


def plausible(coords: np.ndarray, scores: np.ndarray, box: np.ndarray, min_score: float) -> bool:
    """Whether a tracked pose is good enough to place the next frame's box."""
    ok = (scores >= min_score) & np.isfinite(coords).all(-1)
    if ok.sum() < max(4, len(scores) // 3):
        return False
    span = coords[ok].max(0) - coords[ok].min(0)
    return bool(span.max() > 0.15 * max(box[2], box[3]))   # not collapsed to a point


def next_box(coords: np.ndarray, wh: tuple[int, int], detected: np.ndarray | None = None) -> np.ndarray:
    """The box of all of a pose's joints grown as training boxes are, each side at most
    GROW_CAP x the `detected` box's (around the joints' centre), clipped to the frame. (The box
    of the confident joints alone lost the legs for good: a foot scored under the threshold
    left the box at the knee, the next crop cut the shin, and the model put the ankle on the
    crop's edge at knee height: tests/test_tracking.py.)"""
    kp = np.concatenate([coords, np.isfinite(coords).all(-1, keepdims=True).astype(float)], -1)[None]
    b = g.keypoint_box(np.nan_to_num(kp), g.PERSON_BOX_MARGIN)[0]
    if detected is not None:
        size = np.minimum(b[2:], GROW_CAP * detected[2:])
        b = np.concatenate([b[:2] + (b[2:] - size) / 2, size])
    x0, y0 = max(0.0, b[0]), max(0.0, b[1])
    x1, y1 = min(float(wh[0]), b[0] + b[2]), min(float(wh[1]), b[1] + b[3])
    return np.array([x0, y0, max(1.0, x1 - x0), max(1.0, y1 - y0)])


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xywh boxes a (N, 4) and b (M, 4): (N, M)."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    union = a[:, None, 2:].prod(-1) + b[None, :, 2:].prod(-1) - inter
    return inter / np.maximum(union, 1e-9)


def associate(tracks: np.ndarray, dets: np.ndarray, min_iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """Greedy IoU matching: (track, detection) pairs, best overlap first, each used once."""
    if len(tracks) == 0 or len(dets) == 0:
        return []
    m = iou(tracks, dets)
    pairs = []
    for flat in np.argsort(-m, axis=None, kind="stable"):
        t, d = divmod(int(flat), m.shape[1])
        if m[t, d] < min_iou:
            break
        if all(t != a and d != b for a, b in pairs):
            pairs.append((t, d))
    return pairs


@dataclass
class Track:
    id: int
    box: np.ndarray                     # where the person is looked for in the next frame
    score: float                        # the detection score that started or last refreshed it
    misses: int = 0                     # consecutive frames without a plausible pose
    detected: np.ndarray | None = None  # the box it was last detected with (next_box's size cap)
    filter: OneEuro | None = None
    pose: np.ndarray | None = field(default=None, repr=False)


class Tracker:
    """The people of one video. Per frame: `detect(...)` when `wants_detection` says so, then
    `boxes()` for the model, then `update(...)` with its poses."""

    def __init__(self, max_people: int = 20, every: int | None = None, smooth: bool = False) -> None:
        self.max_people, self.every, self.smooth = max_people, every, smooth
        self.tracks: list[Track] = []
        self.next_id = 0

    def wants_detection(self, frame: int) -> bool:
        """The first frame; every `every` frames (periodic sources); a frame after a track got
        lost (every frame while one stays lost, for sources that are not periodic)."""
        if frame == 0 or (self.every and frame % self.every == 0):
            return True
        if self.every:
            return any(t.misses == 1 for t in self.tracks)
        return not self.tracks or any(t.misses > 0 for t in self.tracks)

    def detect(self, boxes: np.ndarray, scores: np.ndarray) -> None:
        """A detection round: matched tracks take the detected box, lost tracks nobody
        found end, new people start tracks (best first, up to max_people)."""
        current = np.stack([t.box for t in self.tracks]) if self.tracks else np.zeros((0, 4))
        pairs = associate(current, boxes)
        matched = {t for t, _ in pairs}
        for t, d in pairs:
            self.tracks[t].box, self.tracks[t].score = boxes[d].astype(float).copy(), float(scores[d])
            self.tracks[t].detected = self.tracks[t].box.copy()
        # A lost track (no plausible pose) that the detection round does not find either is gone:
        # kept, it would hold a slot and spawn a duplicate when the person is detected again.
        self.tracks = [t for i, t in enumerate(self.tracks) if i in matched or t.misses == 0]
        used = {d for _, d in pairs}
        for d in range(len(boxes)):
            if d not in used and len(self.tracks) < self.max_people:
                box = boxes[d].astype(float).copy()
                self.tracks.append(Track(self.next_id, box, float(scores[d]), detected=box.copy(),
                                         filter=OneEuro() if self.smooth else None))
                self.next_id += 1

    def boxes(self) -> np.ndarray:
        return np.stack([t.box for t in self.tracks]) if self.tracks else np.zeros((0, 4))

    def update(self, coords: np.ndarray, scores: np.ndarray, wh: tuple[int, int], min_score: float,
               dt: float) -> np.ndarray:
        """The model's poses for `boxes()` (N, K, 2), (N, K): smooth them, move each track's
        box to its pose (or count a miss), end tracks lost too long and duplicates. Returns
        the (smoothed) coords."""
        coords = coords.copy()
        for i, t in enumerate(self.tracks):
            if t.filter is not None:
                coords[i] = t.filter(coords[i], dt)
            if plausible(coords[i], scores[i], t.box, min_score):
                # The cap holds between detection rounds; a track that only the person search
                # started (one person, no rounds) follows its pose wherever it grows.
                t.box, t.misses, t.pose = next_box(coords[i], wh, t.detected if self.every else None), 0, coords[i]
            else:
                t.misses += 1
                if t.filter is not None:
                    t.filter = OneEuro()
        self._drop_duplicates()
        self.tracks = [t for t in self.tracks if t.misses <= MAX_MISSES]
        return coords

    def _drop_duplicates(self) -> None:
        """Two tracks that hold the same pose follow one person: the younger one ends."""
        for a in self.tracks:
            for b in self.tracks:
                if a.id < b.id and a.misses == 0 and b.misses == 0 and a.pose is not None and b.pose is not None:
                    side = max(a.box[2], a.box[3], b.box[2], b.box[3])
                    if np.median(np.linalg.norm(a.pose - b.pose, axis=-1)) < SAME_PERSON * side:
                        b.misses = MAX_MISSES + 1
