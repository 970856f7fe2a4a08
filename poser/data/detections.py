"""Person detections in COCO's results format, for `--boxes` (eval and annotate alike).

A file is a JSON list of `{"bbox": [x, y, w, h], "score": s, "image_id": id | "file_name": name,
"category_id": 1}`; other categories are ignored, and so are detections scoring below the
threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from poser.errors import PoserError


def read_detections(path: Path, threshold: float = 0.0) -> dict[str, dict]:
    """{'id': {image_id: [(box (4,), score)]}, 'name': {file name: [...]}}."""
    try:
        dets = json.loads(Path(path).read_text())
        assert isinstance(dets, list)
    except (OSError, ValueError, AssertionError) as e:
        raise PoserError(f"--boxes {path}: not a JSON list of detections ({e})") from None
    out: dict = {"name": {}, "id": {}}
    for d in dets:
        if not isinstance(d, dict) or len(d.get("bbox", ())) != 4:
            raise PoserError(f"--boxes {path}: every detection needs bbox [x, y, w, h]; found {str(d)[:80]}")
        if d.get("score", 1.0) < threshold or d.get("category_id", 1) != 1:
            continue
        item = (np.asarray(d["bbox"], np.float64), float(d.get("score", 1.0)))
        if "file_name" in d:
            out["name"].setdefault(Path(d["file_name"]).name, []).append(item)
        elif "image_id" in d:
            out["id"].setdefault(int(d["image_id"]), []).append(item)
    return out
