"""Person detections in COCO's results format: `--boxes` files, `--save-boxes` files and the
built-in detectors' output all go through `select` here (eval and annotate alike).

A file is a JSON list of `{"bbox": [x, y, w, h], "score": s, "image_id": id | "file_name": name,
"category_id": 1}`, plus `"frame": n` for a video's frames (`annotate --save-boxes` writes it;
a video's entries without a frame are its first frame's boxes). Other categories are ignored;
detections scoring below the threshold are dropped, and each image or frame keeps its
`max_people` best.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from poser.errors import PoserError

Boxes = tuple[np.ndarray, np.ndarray]        # boxes (N, 4) xywh, scores (N,), best first
MAX_COORD = 1e6                              # px: no image is larger; beyond, a box is garbage


def select(dets: list[dict], threshold: float = 0.0, max_people: int | None = None) -> Boxes:
    """The person boxes of one image or frame: category 1, score >= threshold, best first,
    at most `max_people`; entries that are not valid boxes (`valid_box`) never pass."""
    keep = [d for d in dets if valid_box(d) and d.get("category_id", 1) == 1 and d.get("score", 1.0) >= threshold]
    keep.sort(key=lambda d: -d.get("score", 1.0))
    keep = keep[:max_people] if max_people is not None else keep
    if not keep:
        return np.zeros((0, 4)), np.zeros(0)
    return (np.array([d["bbox"] for d in keep], np.float64),
            np.array([d.get("score", 1.0) for d in keep], np.float64))


def valid_box(d: object) -> bool:
    """A detection dict with 4 finite numbers within any image (|v| < 1e6 px), a positive
    width and height, a finite numeric score, and where given a string file_name, an integer
    image_id and an integer frame >= 0."""
    if not isinstance(d, dict):
        return False
    if "file_name" in d and not isinstance(d["file_name"], str):
        return False
    if "image_id" in d and not _integer(d["image_id"]):
        return False
    if d.get("frame") is not None and not (_integer(d["frame"]) and d["frame"] >= 0):
        return False
    b, s = d.get("bbox"), d.get("score", 1.0)
    if not isinstance(b, list | tuple) or len(b) != 4 or not all(_number(v) for v in b) or not _number(s):
        return False
    return box_ok(b)


def box_ok(b) -> bool:
    """4 finite numbers x, y, w, h within any image (|v| < 1e6 px), w and h positive."""
    return bool(np.isfinite(b).all() and b[2] > 0 and b[3] > 0 and np.abs(b).max() < MAX_COORD)


def check_boxes(boxes) -> np.ndarray:
    """Person boxes handed in from Python ((4,) or (N, 4) xywh) -> (N, 4) float64, or a
    one-line PoserError naming the first box that `--boxes` would also have refused."""
    try:
        arr = np.asarray(boxes, np.float64)
    except (TypeError, ValueError):
        raise PoserError(f"boxes: expected numbers, an (N, 4) array of x, y, w, h; got "
                         f"{type(boxes).__name__}") from None
    if arr.ndim not in (1, 2) or arr.shape[-1] != 4 or (arr.ndim == 1 and arr.size != 4):
        raise PoserError(f"boxes: expected shape (N, 4) (x, y, w, h per person) or (4,), got {arr.shape}")
    arr = arr.reshape(-1, 4)
    for i, b in enumerate(arr):
        if not box_ok(b):
            raise PoserError(f"boxes: box {i} {b.tolist()} is not a person box (finite x, y, positive w, h, "
                             f"all under {MAX_COORD:.0e} px)")
    return arr


def _integer(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class Detections:
    """A `--boxes` file, read once: boxes by file name or image id, and by video frame.
    `skipped` lists the indices of entries that were not valid boxes."""

    def __init__(self, dets: list[dict], threshold: float = 0.0, max_people: int | None = None,
                 skipped: list[int] | None = None) -> None:
        self.threshold, self.max_people, self.skipped = threshold, max_people, skipped or []
        self._by: dict[tuple[str, object], dict[int, list[dict]]] = {}
        self._framed: set[tuple[str, object]] = set()
        for d in dets:
            key = ("name", Path(d["file_name"]).name) if "file_name" in d else \
                  ("id", int(d["image_id"])) if "image_id" in d else None
            if key is None:
                continue
            if d.get("frame") is not None:
                self._framed.add(key)
            self._by.setdefault(key, {}).setdefault(int(d.get("frame") or 0), []).append(d)

    def _key(self, name: str) -> tuple[str, object] | None:
        stem = Path(name).stem
        for key in (("name", name), ("id", int(stem)) if stem.isdigit() else None):
            if key in self._by:
                return key
        return None

    def ids(self) -> set[int]:
        return {k for kind, k in self._by if kind == "id"}

    def has(self, name: str) -> bool:
        """Whether the file holds any detection for this file name (or numeric stem)."""
        return self._key(name) is not None

    def has_frames(self, name: str) -> bool:
        """Whether a video's boxes are per frame (a saved detector run) rather than one set
        for its first frame."""
        return self._key(name) in self._framed

    def lookup(self, name: str | int, frame: int = 0) -> Boxes:
        """Boxes of a file name (or a numeric stem as COCO image id) or an image id; for a
        video, of its `frame`. Nothing for it: no boxes."""
        key = ("id", name) if isinstance(name, int) else self._key(name)
        return select(self._by.get(key, {}).get(frame, []), self.threshold, self.max_people)


def read_detections(path: Path, threshold: float = 0.0, max_people: int | None = None) -> Detections:
    """Read a detections file; entries that are not valid boxes are skipped and listed in
    `skipped` (the rest is used)."""
    try:
        dets = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as e:
        raise PoserError(f"`boxes` {path}: not a JSON list of detections ({e})") from None
    if not isinstance(dets, list):
        raise PoserError(f"`boxes` {path}: not a JSON list of detections (a {type(dets).__name__})")
    ok = [valid_box(d) for d in dets]
    if dets and not any(ok):
        raise PoserError(f"`boxes` {path}: no valid detection (each needs bbox [x, y, w, h] with w, h > 0, "
                         f"a numeric score, a string file_name or an integer image_id); found {str(dets[0])[:80]}")
    return Detections([d for d, good in zip(dets, ok, strict=True) if good], threshold, max_people,
                      [i for i, good in enumerate(ok) if not good])
