"""Threaded frame reading and writing: decoding and encoding overlap with the model, and
whatever fails, both threads stop and nothing half-written stays."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import cv2

# FFmpeg's own log ("moov atom not found" for a text file named .mp4) would print beside poser's one
# line about the file; set before the first capture opens FFmpeg, unless the user set it.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

from poser.errors import PoserError

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
    """Decodes a video on a background thread into a bounded queue (iterate for BGR frames;
    `time_ms` is then the frame's own timestamp, right for variable-frame-rate videos too).
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
        self.time_ms = 0.0
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        _background_priority()
        try:
            while not self.stop.is_set():
                ok, frame = self.cap.read()
                if not ok or not _put(self.queue, (frame, float(self.cap.get(cv2.CAP_PROP_POS_MSEC))), self.stop):
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
            frame, self.time_ms = item
            yield frame

    def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        self.thread.join(timeout)


def frame_count(path: Path) -> int:
    """The frames a video file says it holds (0 for a file no reader opens)."""
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()


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
        """Finish: everything handed over is written; raises the writer's error if any, and
        when the file does not hold every frame (OpenCV's writer only logs a failed write, a
        full disk among them): a video is complete or it is not kept."""
        if self.thread.is_alive():
            self.put(_END)
            self.thread.join()
        if self.error is not None:
            self._raise()
        if self.enabled and self.written:
            readable = frame_count(self.tmp)
            if readable < self.written:
                self.tmp.unlink(missing_ok=True)
                raise PoserError(f"the annotated video could not be written completely ({readable} of "
                                 f"{self.written} frames readable back: disk full?); nothing kept")

    def abort(self, timeout: float = 5.0) -> None:
        self.stop.set()
        self.thread.join(timeout)
        self.tmp.unlink(missing_ok=True)
