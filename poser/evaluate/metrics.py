"""PCP and PDJ as pure numpy functions (COCO AP lives beside them, through pycocotools).

Shapes: N instances, K joints, L limbs. `pred` (N, K, 2) and `gt` (N, K, 3) share one frame
(image pixels, or any similarity transform of them: both metrics are ratios of lengths).
A joint counts when its ground truth has a position (visibility flag > 0).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from poser.skeletons import Skeleton

PDJ_FRACTIONS = np.round(np.arange(0.0, 0.5001, 0.01), 2)


def limb_hits(pred: np.ndarray, gt: np.ndarray, skeleton: Skeleton, thr: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Strict PCP per limb: (N, L) correct, (N, L) counted. A limb is correct when both
    predicted endpoints are within thr x its ground-truth length of their true positions."""
    a = np.array([limb.a for limb in skeleton.pcp_limbs])
    b = np.array([limb.b for limb in skeleton.pcp_limbs])
    length = np.linalg.norm(gt[:, a, :2] - gt[:, b, :2], axis=-1)
    err_a = np.linalg.norm(pred[:, a] - gt[:, a, :2], axis=-1)
    err_b = np.linalg.norm(pred[:, b] - gt[:, b, :2], axis=-1)
    counted = (gt[:, a, 2] > 0) & (gt[:, b, 2] > 0) & (length > 0)
    correct = counted & (err_a <= thr * length) & (err_b <= thr * length)
    return correct, counted


def pcp(pred: np.ndarray, gt: np.ndarray, skeleton: Skeleton, thr: float = 0.5) -> dict:
    """PCP per limb kind and the arms+legs mean (DeepPose's headline number)."""
    correct, counted = limb_hits(pred, gt, skeleton, thr)
    kinds = [limb.kind for limb in skeleton.pcp_limbs]
    out: dict = {"per_kind": {}, "limbs_counted": int(counted.sum())}
    for kind in dict.fromkeys(kinds):
        cols = [i for i, k in enumerate(kinds) if k == kind]
        n = counted[:, cols].sum()
        out["per_kind"][kind] = float(correct[:, cols].sum() / n) if n else float("nan")
    limbs = [i for i, k in enumerate(kinds) if k in ("upper_arm", "lower_arm", "upper_leg", "lower_leg")]
    n = counted[:, limbs].sum()
    out["mean"] = float(correct[:, limbs].sum() / n) if n else float("nan")
    return out


def torso_diameter(gt: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N,) distance left shoulder - right hip, else right shoulder - left hip, else NaN."""
    out = np.full(len(gt), np.nan)
    diag = skeleton.torso_diagonals(gt)
    for i, (a, b) in ((1, skeleton.torso_fallback), (0, skeleton.torso)):   # the preferred diagonal wins
        ok = (gt[:, a, 2] > 0) & (gt[:, b, 2] > 0)
        out = np.where(ok & (diag[:, i] > 0), diag[:, i], out)
    return out


def joint_errors(pred: np.ndarray, gt: np.ndarray, skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) error / torso diameter, and (N, K) counted (labelled, torso known)."""
    d = torso_diameter(gt, skeleton)
    err = np.linalg.norm(pred - gt[..., :2], axis=-1) / np.where(np.isnan(d), 1.0, d)[:, None]
    counted = (gt[..., 2] > 0) & ~np.isnan(d)[:, None]
    return err, counted


def pdj(pred: np.ndarray, gt: np.ndarray, skeleton: Skeleton, fractions: np.ndarray = PDJ_FRACTIONS) -> dict:
    """PDJ curve over `fractions` (all joints), and PDJ@0.2 per joint and joint group.
    Instances with no visible torso diagonal are not counted (their scale is unknown)."""
    err, counted = joint_errors(pred, gt, skeleton)
    n = counted.sum()
    curve = [float(((err < f) & counted).sum() / n) if n else float("nan") for f in fractions]

    def at(mask: np.ndarray, f: float = 0.2) -> float:
        c = counted & mask
        return float(((err < f) & c).sum() / c.sum()) if c.sum() else float("nan")

    k = skeleton.num_joints
    cols = np.arange(k)
    return {
        "fractions": [float(f) for f in fractions], "curve": curve,
        "at_0.2": at(np.ones_like(counted)), "at_0.1": at(np.ones_like(counted), 0.1),
        "per_joint": {skeleton.joints[j]: at(cols[None, :] == j) for j in range(k)},
        "per_group": {g: at(np.isin(cols, idx)[None, :]) for g, idx in skeleton.groups.items()},
        "joints_counted": int(n), "instances_without_torso": int((~counted.any(1) & (gt[..., 2] > 0).any(1)).sum()),
    }


SCORE_BINS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 1.0)


def score_reliability(pred: np.ndarray, scores: np.ndarray, gt: np.ndarray, skeleton: Skeleton,
                      bins: tuple[float, ...] = SCORE_BINS) -> dict:
    """How often a joint of each score is right (within 0.2 torso diameters, PDJ's rule), by
    score bin, and `min_score`: the lowest bin edge from which every bin is right at least half
    the time, the score above which this model's joints are more likely right than wrong (what
    annotate's --min-score means). Models differ here: a small model's scores run low."""
    err, counted = joint_errors(pred, gt, skeleton)
    s = np.where(np.isfinite(scores), scores, -1.0)
    rows, min_score = [], None
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        k = counted & (s >= lo) & ((s < hi) if hi < bins[-1] else (s <= hi))
        rows.append({"from": lo, "to": hi, "joints": int(k.sum()),
                     "right": float((err[k] < 0.2).mean()) if k.any() else float("nan")})
    for r in reversed(rows):            # walk down from the top bin while bins stay right >= 50%
        if not r["joints"]:
            continue
        if r["right"] < 0.5:
            break
        min_score = r["from"]
    return {"bins": rows, "min_score": min_score}


COCO_STATS = ("AP", "AP50", "AP75", "AP_medium", "AP_large", "AR", "AR50", "AR75", "AR_medium", "AR_large")


def coco_keypoint_ap(ann_file: Path, results: list[dict], sigmas: np.ndarray | None = None,
                     image_ids: np.ndarray | None = None) -> dict:
    """COCO keypoint AP/AR (OKS) through pycocotools for results in COCO's format
    ({image_id, category_id, keypoints [x, y, score] x K, score}), over `image_ids` (default:
    every image of the annotation file); persons without a result count as missed."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    from poser.data.coco import load_coco_json  # checked, and annotation ids made unique

    # A result with a non-finite coordinate or score is a miss, never NaN handed to pycocotools
    # (which would score it as a match). A joint's confidence plays no part in OKS: NaN there is 0.
    results = [r | {"keypoints": _confidence_finite(r["keypoints"])} for r in results
               if _finite(_coordinates(r.get("keypoints", ()))) and _finite([r.get("score", 1.0)])]
    with contextlib.redirect_stdout(io.StringIO()):   # pycocotools prints as it goes
        gt = load_coco_json(ann_file)
        ids = sorted(gt.getImgIds() if image_ids is None else {int(i) for i in image_ids})
        if not results:
            return {k: 0.0 for k in COCO_STATS} | {"images": len(ids)}
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_STATS, ev.stats, strict=True)} | {"images": len(ev.params.imgIds)}


def _coordinates(kp) -> list:
    return [v for i, v in enumerate(kp) if i % 3 != 2]


def _confidence_finite(kp) -> list:
    return [v if i % 3 != 2 or math.isfinite(v) else 0.0 for i, v in enumerate(kp)]


def _finite(values) -> bool:
    try:
        return bool(np.isfinite(np.asarray(values, dtype=np.float64)).all())
    except (TypeError, ValueError):
        return False
