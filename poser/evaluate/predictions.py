"""Saved COCO keypoint results (`--predictions`): read with every entry checked and bounded,
then matched one to one to the ground-truth people of their image."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from poser.errors import PoserError
from poser.skeletons import Skeleton

MAX_PREDICTIONS_BYTES = 1 << 30     # COCO test-dev's 20,000 photos x 20 people x 400 bytes is 160 MB


def read_results(path: Path, sk: Skeleton) -> list[dict]:
    """COCO keypoint results, checked entry by entry; a file too large, not a list, or nested
    without end is one line before it fills the memory. A missing score counts as 1."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            start = f.read(4096).lstrip(b" \t\r\n\xef\xbb\xbf")
        if size > MAX_PREDICTIONS_BYTES:
            raise PoserError(f"`predictions` {path}: {size / 2**30:.1f} GiB is over the limit of "
                             f"{MAX_PREDICTIONS_BYTES / 2**30:.0f} GiB; split it")
        if start[:1] != b"[":
            raise PoserError(f"`predictions` {path}: expected a JSON list of COCO keypoint results")
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise PoserError(f"`predictions` {path}: not readable JSON ({why})") from None
    if not isinstance(results, list):
        raise PoserError(f"`predictions` {path}: expected a list of COCO keypoint results")
    for i, r in enumerate(results):
        kp = r.get("keypoints") if isinstance(r, dict) else None
        if not (isinstance(r, dict) and "image_id" in r and isinstance(kp, list) and len(kp) == 3 * sk.num_joints):
            raise PoserError(f"`predictions` {path}: every entry needs image_id and {3 * sk.num_joints} keypoint "
                             f"values ({sk.name}); entry {i} is {str(r)[:80]}")
        if not (_is_int(r["image_id"]) and all(_is_number(v) for v in kp) and _is_number(r.get("score", 1.0))):
            raise PoserError(f"`predictions` {path}: entry {i} has values of the wrong type (image_id must be an "
                             f"integer, keypoints and score numbers): {str(r)[:80]}")
        r.setdefault("category_id", 1)          # keypoint results are people; COCO's scorer needs the field
        r.setdefault("score", 1.0)              # and ranks by score
    return results


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)      # NaN allowed: scored as a miss


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def match_predictions(results: list[dict], image_ids: np.ndarray, gt: np.ndarray,
                      sk: Skeleton) -> tuple[np.ndarray, np.ndarray, dict]:
    """Give the ground-truth persons of each image its predictions one to one, best scored
    first (as COCO matches): each prediction in score order takes the closest person (mean
    error over the person's labelled joints) not yet taken. More guesses than people cannot
    raise a score: the extras are left over, counted in the returned dict. A prediction with
    no finite joint or a non-finite score is dropped first (counted too). Persons left
    without one get NaN coordinates: they count as wrong."""
    by_image = defaultdict(list)
    dropped = 0
    for r in results:
        kp = np.asarray(r["keypoints"], np.float64).reshape(-1, 3)
        sc = float(r.get("score", 1.0))
        if not (np.isfinite(kp[:, :2]).all(-1).any() and np.isfinite(sc)):
            dropped += 1
            continue
        by_image[int(r["image_id"])].append((sc, kp))
    n, k = len(gt), sk.num_joints
    pred, score = np.full((n, k, 2), np.nan), np.zeros((n, k))
    rows = defaultdict(list)
    for i, iid in enumerate(image_ids):
        rows[int(iid)].append(i)
    used = 0
    for iid, gi in rows.items():
        cands = sorted(by_image.get(iid, []), key=lambda c: -c[0])      # best scored first; stable
        G = gt[gi]                                                       # (G, K, 3)
        lab = G[..., 2] > 0
        free = np.ones(len(gi), bool)
        for _, P in cands:
            if not free.any():
                break
            d = np.linalg.norm(G[:, :, :2] - P[None, :, :2], axis=-1)   # (G, K); a NaN joint is far
            cost = np.where(lab, np.nan_to_num(d, nan=1e9), 0).sum(-1) / np.maximum(lab.sum(-1), 1)
            a = int(np.argmin(np.where(free, cost, np.inf)))
            pred[gi[a]], score[gi[a]] = P[:, :2], P[:, 2]
            free[a] = False
            used += 1
    info = {"predictions": len(results), "matched": used, "unmatched": len(results) - dropped - used,
            "dropped_non_finite": dropped}
    return pred, score, info
