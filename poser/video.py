"""Videos: the threaded frame reader and writer, and following people through the frames
(the tracker, its IoU association, One-Euro smoothing).

Each person is a `Track`. Between detections a track's box follows its own keypoints of the
previous frame (DeepPose needs a box, and the last pose is the best guess of the next); a
detection round (every N frames, on the first frame, and whenever a track gets lost) matches
boxes to tracks by IoU, refreshes matched tracks, starts tracks for new people and ends lost
tracks nobody found again. A track whose pose stays implausible for `MAX_MISSES` frames ends.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from poser import geometry as g
from poser.errors import PoserError

MATCH_IOU = 0.3         # a detection continues a track when their boxes overlap at least this much
MAX_MISSES = 5          # frames a track may go without a plausible pose before it ends
SAME_PERSON = 0.1       # two tracks whose poses differ by less than this x box side are one person


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


def next_box(coords: np.ndarray, scores: np.ndarray, min_score: float, wh: tuple[int, int]) -> np.ndarray:
    """The box of a pose's confident joints grown as training boxes are, clipped to the frame."""
    kp = np.concatenate([coords, (scores >= min_score)[:, None].astype(float)], -1)[None]
    b = g.keypoint_box(kp, g.PERSON_BOX_MARGIN)[0]
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
        # A lost track (no plausible pose) that the detection round does not find either is gone:
        # kept, it would hold a slot and spawn a duplicate when the person is detected again.
        self.tracks = [t for i, t in enumerate(self.tracks) if i in matched or t.misses == 0]
        used = {d for _, d in pairs}
        for d in range(len(boxes)):
            if d not in used and len(self.tracks) < self.max_people:
                self.tracks.append(Track(self.next_id, boxes[d].astype(float).copy(), float(scores[d]),
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
                t.box, t.misses, t.pose = next_box(coords[i], scores[i], min_score, wh), 0, coords[i]
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


# --- threaded reading and writing ----------------------------------------------------------

_END = object()
POLL = 0.1              # s: how often a blocked queue operation checks whether to give up


def _background_priority() -> None:
    """Lower this thread's scheduling priority (Linux: per-thread nice). The model's
    OpenMP threads wait for each other at every layer, so a decoder thread that pre-empts
    one of them stalls all; at a lower priority it runs in the gaps between layers instead."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):   # not Linux, or not permitted: just slower
        pass


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless `stop` is set first; never blocks for good."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL)
            return True
        except queue.Full:
            continue
    return False


class FrameReader:
    """Decodes a video on a background thread into a bounded queue (iterate for BGR frames).
    `close()` stops the thread wherever it is, also when nobody reads any more."""

    def __init__(self, path: Path, depth: int = 32) -> None:
        # One decoder thread is plenty for one stream; FFmpeg's own pool would contend with the model.
        self.cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, 1])
        if not self.cap.isOpened():
            raise PoserError("not a readable video")
        fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = fps if 0 < fps < 1000 else 25.0
        self.size = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.total = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        _background_priority()
        try:
            while not self.stop.is_set():
                ok, frame = self.cap.read()
                if not ok or not _put(self.queue, frame, self.stop):
                    break
        finally:
            self.cap.release()
            _put(self.queue, _END, self.stop)

    def __iter__(self):
        while True:
            try:
                item = self.queue.get(timeout=POLL)
            except queue.Empty:
                if not self.thread.is_alive() and self.queue.empty():
                    return
                continue
            if item is _END:
                return
            yield item

    def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        self.thread.join(timeout)


class FrameWriter:
    """Draws and encodes frames on a background thread into `tmp` (an mp4 at `fps`);
    `put((frame, *args))` hands one over, `draw(frame, *args)` runs on the thread. `close()`
    finishes the file and raises what went wrong there; `abort()` stops at once."""

    def __init__(self, tmp: Path, fps: float, draw, enabled: bool = True, depth: int = 32) -> None:
        self.tmp, self.fps, self.draw, self.enabled = tmp, fps, draw, enabled
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.error: Exception | None = None
        self.written = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        _background_priority()
        writer = None
        try:
            while not self.stop.is_set():
                try:
                    item = self.queue.get(timeout=POLL)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                frame, *args = item
                if writer is None and self.enabled:
                    writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                             (frame.shape[1], frame.shape[0]))
                    if not writer.isOpened():
                        raise PoserError("OpenCV cannot write mp4 here")
                if writer is not None:
                    self.draw(frame, *args)
                    writer.write(frame)
                self.written += 1
        except Exception as e:      # raised in the model thread by put() / close()
            self.error = e
        finally:
            if writer is not None:
                writer.release()

    def put(self, item: tuple) -> None:
        """Hand a frame over; raises (never blocks for good) once the writer has failed."""
        while True:
            self._raise()
            try:
                self.queue.put(item, timeout=POLL)
                return
            except queue.Full:
                continue

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error if isinstance(self.error, PoserError) else PoserError(str(self.error))
        if not self.thread.is_alive():
            raise PoserError("the video writer stopped")

    def close(self) -> None:
        """Finish: everything handed over is written; raises the writer's error if any."""
        if self.thread.is_alive():
            self.put(_END)
            self.thread.join()
        if self.error is not None:
            self._raise()

    def abort(self, timeout: float = 5.0) -> None:
        self.stop.set()
        self.thread.join(timeout)
        self.tmp.unlink(missing_ok=True)
