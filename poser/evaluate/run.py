"""`poser eval`: PCP, PDJ and COCO keypoint AP of a model, or of saved predictions, on a split.

Ground truth comes from the split's prepared cache (keypoints mapped back to image pixels
through the stored crop matrices), so eval needs no second reader. Protocol:

- PCP (strict): a limb is correct when both predicted endpoints lie within `pcp_threshold` x
  the ground-truth limb length of their true positions; only limbs whose two joints are
  labelled count. The headline number is the mean over arms and legs.
- PDJ: a joint is detected when its error is below a fraction of the torso diameter (left
  shoulder to right hip, else right shoulder to left hip). Instances with neither diagonal
  labelled have no scale and are left out of PDJ (and counted as such).
- Only labelled joints count (COCO v > 0; LSP's occluded joints are labelled). A missing
  prediction counts as wrong.
- COCO AP/AR (OKS, pycocotools) for COCO-17 data: one prediction per ground-truth person
  box, and with `--boxes`, one per detected box, as COCO's own protocol does.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from rich.table import Table

from poser import geometry as g
from poser.console import log, progress
from poser.data.cache import Cache, CacheSpec, cache_dir
from poser.data.datasets import coco_split_files, dataset_skeleton, open_dataset
from poser.data.prepare import prepare_split
from poser.detect.boxes import Detections, read_detections, select
from poser.errors import PoserError
from poser.evaluate.metrics import coco_keypoint_ap, joint_errors, pcp, pdj, score_reliability
from poser.files import atomic_path, write_json
from poser.imageio import decode_rgb, read_rgb
from poser.inference.assemble import load_detector, load_predictor
from poser.inference.draw import draw_pose, label
from poser.inference.poses import Poses, coco_results
from poser.inference.predictor import Predictor, cache_to_image, resolve_weights
from poser.inference.search import SEARCH_PASSES
from poser.models.weights import read_spec
from poser.runs import check_run_name, check_writable, new_run_dir
from poser.skeletons import Skeleton
from poser.spec import ModelSpec


@dataclass
class EvalConfig:
    data: str | None = None             # None: the dataset of the model's skeleton (with_defaults)
    weights: str | None = None
    split: str = "val"
    flip: bool = False
    pcp_threshold: float = 0.5
    boxes: str | None = None            # COCO detection results: [{image_id, bbox, score}, ...]
    person_threshold: float = 0.0       # detections below are dropped
    detector: str | None = None         # a built-in person detector (poser.detect.detectors) instead of --boxes
    detector_weights: str | None = None
    max_people: int = 100               # detections per image, best first
    predictions: str | None = None      # score these (COCO keypoint results) instead of a model
    out: str = "runs/eval"
    name: str | None = None
    device: str = "auto"
    runtime: str = "auto"               # what runs the network (runtime/choice.py)
    precision: str = "auto"
    batch_size: int = 64
    limit: int | None = None            # first N instances only (quick checks)
    stages: int | None = None           # cascade: run only the first N stages
    whole_image: bool = False           # no boxes: the person search from each whole photo
    cache: str | None = None            # the prepared crops' folder (default: <data>/cache; for read-only data)
    search_passes: int = SEARCH_PASSES  # ... with this many passes after the whole-image one


def evaluate(cfg: EvalConfig) -> dict:
    """Score a model (or saved predictions) on one split; writes the run folder, returns
    every number. Reads top to bottom: check every option, load the split, predict by the
    protocol asked, score, write."""
    cfg = with_defaults(cfg)
    spec = check(cfg)
    data = load_split(cfg, spec)
    predictor = load_predictor(cfg.weights, cfg.device, cfg.stages, cfg.runtime, cfg.precision) if cfg.weights \
        else None
    pred = predict(cfg, predictor, data)
    report = {"data": cfg.data, "split": cfg.split, "config": asdict(cfg),
              "model": {"predictions": cfg.predictions} if predictor is None
              else {"weights": cfg.weights, **predictor.spec.summary(), "runtime": predictor.runtime},
              "protocol": protocol_name(cfg)} | score(cfg, data, pred)
    detections = None
    if data.ann_file is not None:
        report["coco_gt_boxes"] = coco_keypoint_ap(data.ann_file, pred.results, data.sigmas, data.ids)
        if cfg.boxes or cfg.detector:
            detections, det = predict_detected_people(cfg, predictor, data)
            report["coco_detected_boxes"] = coco_keypoint_ap(data.ann_file, det, data.sigmas, data.ids)
            report["detected_boxes_from"] = cfg.boxes or f"detector {cfg.detector}"
    write_run(cfg, report, data, pred, detections)
    return report


def with_defaults(cfg: EvalConfig) -> EvalConfig:
    """No model and no predictions: the shipped model; no data: the dataset its skeleton comes
    from (data/lspet for LSP-14, else data/coco)."""
    if cfg.weights is None and cfg.predictions is None:
        cfg = replace(cfg, weights=str(resolve_weights(None)))
    if cfg.data is None:
        skeleton = read_spec(Path(cfg.weights)).skeleton if cfg.weights else None
        cfg = replace(cfg, data="data/lspet" if skeleton == "lsp14" else "data/coco")
    return cfg


def check(cfg: EvalConfig) -> ModelSpec | None:
    """Every option combination and input, before any work: one line each."""
    if cfg.weights is None and cfg.predictions is None:
        raise PoserError("nothing to score: give a model (--weights) or saved predictions (--predictions)")
    if cfg.weights is not None and cfg.predictions is not None:
        raise PoserError("give a model (--weights) or saved predictions (--predictions), not both")
    if cfg.whole_image and cfg.predictions:
        raise PoserError("--whole-image runs a model on the photos; it does not apply to --predictions")
    if cfg.boxes and cfg.detector:
        raise PoserError("give --boxes or --detector, not both")
    if (cfg.boxes or cfg.detector) and cfg.predictions:
        raise PoserError("--boxes and --detector need a model (--weights)")
    check_run_name(cfg.name)
    spec = read_spec(Path(cfg.weights)) if cfg.weights else None   # a bad weights file fails first
    root = Path(cfg.data)
    if not root.is_dir():
        raise PoserError(f"--data {root}: no such folder")
    skeleton = dataset_skeleton(root, cfg.split)
    if (cfg.boxes or cfg.detector) and (skeleton != "coco17" or coco_split_files(root, cfg.split) is None):
        raise PoserError("--boxes and --detector give COCO AP, which needs COCO-17 data in COCO format")
    if spec is not None:
        if spec.skeleton != skeleton:
            raise PoserError(f"the model predicts {spec.skeleton} joints but {root} is {skeleton} data")
    if cfg.boxes and not Path(cfg.boxes).is_file():
        raise PoserError(f"--boxes {cfg.boxes}: no such file")
    if cfg.predictions and not Path(cfg.predictions).is_file():
        raise PoserError(f"--predictions {cfg.predictions}: no such file")
    check_writable(Path(cfg.out))
    return spec


@dataclass
class Split:
    """The evaluated split: its prepared cache and ground truth (image pixels), first n persons."""
    root: Path
    cache: Cache
    gt: np.ndarray                  # (N, K, 3)
    ids: np.ndarray                 # (N,) image ids
    ann_file: Path | None           # COCO-17 annotation file, for COCO AP
    sigmas: np.ndarray              # OKS sigmas

    @property
    def skeleton(self) -> Skeleton:
        return self.cache.skeleton


def load_split(cfg: EvalConfig, spec: ModelSpec | None) -> Split:
    """Prepare (or reuse) the split's cache: the crops the model was trained on (a 160 px model
    needs a 384 px cache, not 256)."""
    root = Path(cfg.data)
    cache_spec = CacheSpec(size=spec.cache_size) if spec is not None else CacheSpec()
    if prepare_split(root, cfg.split, cache_spec, cache_root=cfg.cache)["instances"] == 0:
        raise PoserError(f"{root}: split {cfg.split!r} has no person instances to evaluate")
    cache = Cache(cache_dir(root, cfg.split, cache_spec, cfg.cache))
    n = len(cache) if cfg.limit is None else min(cfg.limit, len(cache))
    ann = coco_split_files(root, cfg.split)
    sk = cache.skeleton
    return Split(root, cache, ground_truth(cache)[:n], cache.image_ids[:n],
                 ann[0] if ann and sk.name == "coco17" else None, np.asarray(sk.sigmas))


@dataclass
class Predicted:
    """One prediction per ground-truth person (image pixels; NaN where none), as COCO results too."""
    coords: np.ndarray              # (N, K, 2)
    score: np.ndarray               # (N, K)
    results: list[dict]
    stages: np.ndarray | None = None    # (N, S, K, 2) for a cascade with ground-truth boxes
    matching: dict | None = None        # saved or searched predictions: how many matched (match_predictions)


def protocol_name(cfg: EvalConfig) -> str:
    if cfg.predictions:
        return "saved predictions, matched to the people of each image"
    if cfg.whole_image:
        return f"whole photo, person search ({cfg.search_passes} passes after the first)"
    return "ground-truth person boxes"


def predict(cfg: EvalConfig, predictor: Predictor | None, data: Split) -> Predicted:
    """Predictions by protocol: saved ones, the person search on whole photos, or the model on
    the ground-truth boxes (the prepared crops)."""
    if predictor is None:
        results = _read_results(Path(cfg.predictions), data.skeleton)
        known = set(data.ids.tolist())
        foreign = [r for r in results if r["image_id"] not in known]
        if foreign:
            log.warning(f"--predictions {cfg.predictions}: {len(foreign)} of {len(results)} entries are for images "
                        f"not in the {cfg.split} split's people (e.g. image_id {foreign[0]['image_id']}); ignored")
            results = [r for r in results if r["image_id"] in known]
        return _matched(results, data)
    if cfg.whole_image:
        results = search_photos(predictor, data.root, cfg.split, data.ids, cfg.search_passes, cfg.flip,
                                cfg.batch_size)
        return _matched(results, data)
    with progress("instances") as bar:
        task = bar.add_task("predict", total=len(data.ids))
        p = predictor.predict_cache(data.cache, cfg.flip, cfg.batch_size, len(data.ids),
                                    lambda k: bar.advance(task, k))
    coords = cache_to_image(data.cache, p.coords)
    stages = np.stack([cache_to_image(data.cache, p.stages[:, s]) for s in range(p.stages.shape[1])], 1)
    return Predicted(coords, p.score, coco_results(data.ids, coords, p.score), stages)


def _matched(results: list[dict], data: Split) -> Predicted:
    coords, sc, info = match_predictions(results, data.ids, data.gt, data.skeleton)
    if info["dropped_non_finite"] or info["unmatched"]:
        log.warning(f"predictions: {info['matched']} of {info['predictions']} matched to a person; "
                    f"{info['unmatched']} more than the people of their image (left over, best scored kept), "
                    f"{info['dropped_non_finite']} with no finite joint or score (dropped)")
    return Predicted(coords, sc, results, matching=info)


def score(cfg: EvalConfig, data: Split, pred: Predicted) -> dict:
    """PCP, PDJ, the cascade stage by stage, and what was counted."""
    sk, gt = data.skeleton, data.gt
    out = {"pcp": pcp(pred.coords, gt, sk, cfg.pcp_threshold) | {"threshold": cfg.pcp_threshold},
           "pdj": pdj(pred.coords, gt, sk), "scores": score_reliability(pred.coords, pred.score, gt, sk)}
    if pred.stages is not None and pred.stages.shape[1] > 1:
        out["per_stage"] = [{"stage": s + 1, "pcp": pcp(pred.stages[:, s], gt, sk, cfg.pcp_threshold)["mean"],
                             "pdj": pdj(pred.stages[:, s], gt, sk)} for s in range(pred.stages.shape[1])]
    out["counted"] = {"images": int(len(np.unique(data.ids))), "instances": int(len(data.ids)),
                      "joints": out["pdj"]["joints_counted"], "limbs": out["pcp"]["limbs_counted"],
                      "instances_without_torso": out["pdj"]["instances_without_torso"]}
    if pred.matching is not None:
        out["counted"]["predictions"] = pred.matching
    return out


def predict_detected_people(cfg: EvalConfig, predictor: Predictor, data: Split) -> tuple[list | None, list[dict]]:
    """COCO's own protocol: poses on detected person boxes (a --boxes file or the detector).
    Returns the raw detections (detector only) and the poses as COCO keypoint results."""
    image_ids = set(data.ids.tolist())
    if cfg.detector:
        return detect_photos(cfg, predictor, data.root, image_ids)
    dets = read_detections(Path(cfg.boxes), cfg.person_threshold, cfg.max_people)
    if dets.skipped:
        log.warning(f"--boxes {cfg.boxes}: skipped {len(dets.skipped)} invalid detection(s)")
    files, ids = image_files(data.root, cfg.split), dets.ids()
    if not any(i in ids or dets.has(files[i].name) for i in image_ids if i in files):
        log.warning(f"--boxes {cfg.boxes} has no detection for any photo of split {cfg.split!r} (entries match "
                    "by image_id or file_name): every person counts as missed")
    return None, predict_detections(predictor, data.root, cfg.split, dets, cfg.flip, image_ids)


def write_run(cfg: EvalConfig, report: dict, data: Split, pred: Predicted, detections: list | None) -> None:
    """The run folder: metrics.json, predictions.json, detections.json, plots and examples."""
    run = new_run_dir(Path(cfg.out), cfg.name)
    report["run"] = str(run)
    if detections is not None:          # what the detector saw, reusable as --boxes
        write_json(run / "detections.json", detections, indent=None)
    if not cfg.predictions:
        write_json(run / "predictions.json", pred.results, indent=None)
    write_json(run / "metrics.json", report)
    if "per_stage" in report:
        plot_pdj([r["pdj"] for r in report["per_stage"]], [f"stage {r['stage']}" for r in report["per_stage"]],
                 run / "pdj_curve.png")
    else:
        plot_pdj([report["pdj"]], ["model"], run / "pdj_curve.png")
    plot_per_joint(report["pdj"], run / "pdj_per_joint.png")
    example_grid(data.cache, pred.coords, data.gt, data.skeleton, run / "examples.png")


def ground_truth(cache: Cache) -> np.ndarray:
    """(N, K, 3) ground-truth keypoints in original image pixels (flags kept)."""
    gt = cache.keypoints.astype(np.float64).copy()
    gt[..., :2] = cache_to_image(cache, gt[..., :2])
    return gt


MAX_PREDICTIONS_BYTES = 1 << 30     # COCO test-dev's 20,000 photos x 20 people x 400 bytes is 160 MB


def _read_results(path: Path, sk: Skeleton) -> list[dict]:
    """COCO keypoint results, checked entry by entry; a file too large, not a list, or nested
    without end is one line before it fills the memory. A missing score counts as 1."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            start = f.read(4096).lstrip(b" \t\r\n\xef\xbb\xbf")
        if size > MAX_PREDICTIONS_BYTES:
            raise PoserError(f"--predictions {path}: {size / 2**30:.1f} GiB is over the limit of "
                             f"{MAX_PREDICTIONS_BYTES / 2**30:.0f} GiB; split it")
        if start[:1] != b"[":
            raise PoserError(f"--predictions {path}: expected a JSON list of COCO keypoint results")
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise PoserError(f"--predictions {path}: not readable JSON ({why})") from None
    if not isinstance(results, list):
        raise PoserError(f"--predictions {path}: expected a list of COCO keypoint results")
    for i, r in enumerate(results):
        kp = r.get("keypoints") if isinstance(r, dict) else None
        if not (isinstance(r, dict) and "image_id" in r and isinstance(kp, list) and len(kp) == 3 * sk.num_joints):
            raise PoserError(f"--predictions {path}: every entry needs image_id and {3 * sk.num_joints} keypoint "
                             f"values ({sk.name}); entry {i} is {str(r)[:80]}")
        if not (_is_int(r["image_id"]) and all(_is_number(v) for v in kp) and _is_number(r.get("score", 1.0))):
            raise PoserError(f"--predictions {path}: entry {i} has values of the wrong type (image_id must be an "
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


def evaluate_cache(predictor: Predictor, cache: Cache, flip: bool = False, batch_size: int = 64,
                   limit: int | None = None, progress=None, pcp_threshold: float = 0.5) -> tuple[dict, dict]:
    """Predict every instance of a prepared cache (the first `limit`) and score PCP and PDJ;
    both are similarity-invariant, so cache-crop pixels score as image pixels do. Returns the
    predictions (cache-crop pixels) and the metrics."""
    p = predictor.predict_cache(cache, flip, batch_size, limit, progress)
    gt = cache.keypoints[: len(p)]
    return p, {"pcp": pcp(p.coords, gt, cache.skeleton, pcp_threshold), "pdj": pdj(p.coords, gt, cache.skeleton)}


def detect_photos(cfg: EvalConfig, predictor: Predictor, root: Path, image_ids: set[int],
                  batch_size: int = 4) -> tuple[list[dict], list[dict]]:
    """The built-in person detector, then the pose model on its boxes, on the evaluated photos
    (each decoded once). Returns the raw detections (COCO results with image_id, as a --boxes
    file holds them) and the poses as COCO keypoint results."""

    detector = load_detector(cfg.detector, cfg.detector_weights, predictor.device, cfg.person_threshold)
    files = image_files(root, cfg.split)
    todo = sorted(i for i in image_ids if i in files)
    raw: list[dict] = []
    out: list[dict] = []
    with progress("images") as bar:
        task = bar.add_task(f"detect ({cfg.detector}) + pose", total=len(todo))
        for c in range(0, len(todo), batch_size):
            chunk = [(i, read_rgb(files[i])) for i in todo[c: c + batch_size]]
            ok = [(i, im) for i, im in chunk if im is not None]
            found = detector([im for _, im in ok])
            people = [select(f, cfg.person_threshold, cfg.max_people) for f in found]     # as a --boxes file is read
            preds = predictor.predict_images([im for _, im in ok], [b for b, _ in people], cfg.flip)
            for (i, _), f, (_, sc), p in zip(ok, found, people, preds, strict=True):
                raw += [dict(d, image_id=i) for d in f]
                out += Poses.from_prediction(p, predictor.skeleton, sc).to_coco(i)
            bar.advance(task, len(chunk))
    return raw, out


def predict_detections(predictor: Predictor, root: Path, split: str, dets: Detections, flip: bool,
                       image_ids: set[int]) -> list[dict]:
    """Keypoints for every detected person box of the evaluated images, as COCO results
    scored by pose score x box score (COCO ranks by person score)."""
    per_image = {i: dets.lookup(i) for i in sorted(dets.ids() & image_ids)}
    per_image = {i: b for i, b in per_image.items() if len(b[0])}
    files = image_files(root, split)
    out = []
    with progress("images") as bar:
        task = bar.add_task("detections", total=len(per_image))
        for iid, (boxes, box_scores) in per_image.items():
            img = read_rgb(files[iid]) if iid in files else None
            if img is None:
                log.warning(f"skipped: image {iid} is unreadable")
                continue
            out += Poses.from_prediction(predictor.predict_image(img, boxes, flip), predictor.skeleton,
                                         box_scores).to_coco(iid)
            bar.advance(task)
    return out


def image_files(root: Path, split: str) -> dict[int, Path]:
    """Image id -> photo path of a split (for the protocols that run on the photos)."""
    inst = open_dataset(root, split)
    return {int(i): inst.image_root / f for i, f in zip(inst.image_ids, inst.files, strict=True)}


def search_photos(predictor: Predictor, root: Path, split: str, image_ids: np.ndarray, passes: int, flip: bool,
                  batch_size: int = 16) -> list[dict]:
    """One person per photo, found by the Predictor's person search from the whole photo (no
    boxes: DeepPose's LSP protocol), as COCO keypoint results."""
    files = image_files(root, split)
    todo = list(dict.fromkeys(int(i) for i in image_ids))
    out = []
    with progress("images") as bar:
        task = bar.add_task("search", total=len(todo))
        for a in range(0, len(todo), batch_size):
            batch = [(iid, read_rgb(files[iid]) if iid in files else None) for iid in todo[a: a + batch_size]]
            for iid, img in batch:
                if img is None:
                    log.warning(f"skipped: image {iid} is unreadable (its persons count as missed)")
            batch = [(iid, img) for iid, img in batch if img is not None]
            if batch:
                found = predictor.find_person([img for _, img in batch], passes, flip)
                for (iid, _), r in zip(batch, found, strict=True):
                    out += coco_results(np.array([iid]), r.coords, r.score)
            bar.advance(task, len(todo[a: a + batch_size]))
    return out


# --- pictures -------------------------------------------------------------------------------

def plot_pdj(pdjs: list[dict], names: list[str], path: Path) -> None:
    """PDJ curves (detection rate vs normalised distance), one per entry, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    for p, name in zip(pdjs, names, strict=True):
        ax.plot(p["fractions"], p["curve"], label=f"{name} (PDJ@0.2 {p['at_0.2']:.3f})", lw=2)
    ax.set(xlabel="normalised distance to ground truth (x torso diameter)", ylabel="detection rate",
           xlim=(0, 0.5), ylim=(0, 1), title="PDJ")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save_fig(fig, path)


def plot_per_joint(p: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, vals = list(p["per_joint"]), [p["per_joint"][k] for k in p["per_joint"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names)), 4.5), dpi=110)
    ax.bar(range(len(names)), np.nan_to_num(vals), color="#3b7dd8")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set(ylim=(0, 1), ylabel="PDJ@0.2", title=f"PDJ@0.2 per joint (all: {p['at_0.2']:.3f})")
    ax.grid(axis="y", alpha=0.3)
    _save_fig(fig, path)


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def example_grid(cache: Cache, pred: np.ndarray, gt: np.ndarray, sk: Skeleton, path: Path, n: int = 4) -> None:
    """The n best and n worst instances (mean normalised joint error): ground truth in
    white, prediction in side colours, on the prepared crops."""
    err, counted = joint_errors(pred, gt, sk)
    e = np.where(counted, np.nan_to_num(err, nan=9.0), 0.0)          # a missing prediction: far off
    k = counted.sum(1)
    score = np.where(k > 0, e.sum(1) / np.maximum(k, 1), np.nan)
    order = np.argsort(np.where(np.isnan(score), np.inf, score))
    valid = order[: int(np.isfinite(score).sum())]
    picks = [("best", i) for i in valid[:n]] + [("worst", i) for i in valid[::-1][:n]]
    tiles = []
    for tag, i in picks:
        img = cv2.cvtColor(decode_rgb(cache.encoded(i)), cv2.COLOR_RGB2BGR)
        m = cache.matrix[i]
        gt_c = g.transform_points(m, gt[i, :, :2])
        draw_pose(img, np.where(gt[i, :, 2:] > 0, gt_c, np.nan), sk, width=1, colour=(255, 255, 255))
        draw_pose(img, g.transform_points(m, pred[i]), sk, width=2)
        label(img, f"{tag}: err {score[i]:.2f}")
        tiles.append(img)
    if not tiles:
        return
    while len(tiles) % n:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[r: r + n]) for r in range(0, len(tiles), n)])
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", grid)
        tmp.write_bytes(buf.tobytes())


# --- tables ---------------------------------------------------------------------------------

def report_tables(report: dict) -> list[Table]:
    c = report["counted"]
    pc, pd = report["pcp"], report["pdj"]
    head = (f"{report['data']} [{report['split']}]: {c['images']} images, {c['instances']} persons, "
            f"{c['joints']} joints, {c['limbs']} limbs counted; {report['protocol']}")
    t1 = Table("metric", "value", title=head)
    t1.add_row(f"PCP@{pc['threshold']} arms+legs", f"{pc['mean']:.3f}")
    for kind, v in pc["per_kind"].items():
        t1.add_row(f"  PCP {kind}", f"{v:.3f}")
    t1.add_row("PDJ@0.2 all joints", f"{pd['at_0.2']:.3f}")
    t1.add_row("PDJ@0.1 all joints", f"{pd['at_0.1']:.3f}")
    for grp, v in pd["per_group"].items():
        t1.add_row(f"  PDJ@0.2 {grp}", f"{v:.3f}")
    if c["instances_without_torso"]:
        t1.add_row("persons without a torso diagonal (not in PDJ)", str(c["instances_without_torso"]))
    tables = [t1]
    if "scores" in report:
        sr = report["scores"]
        t = Table("joint score", "joints", "right (PDJ@0.2)",
                  title=f"joint scores: right at least half the time from {sr['min_score']} (a --min-score)")
        for r in sr["bins"]:
            t.add_row(f"{r['from']:.2f}-{r['to']:.2f}", str(r["joints"]), f"{r['right']:.2f}")
        tables.append(t)
    if "per_stage" in report:
        t = Table("stage", f"PCP@{pc['threshold']}", "PDJ@0.05", "PDJ@0.1", "PDJ@0.2",
                  title="the cascade, stage by stage")
        for r in report["per_stage"]:
            curve = dict(zip(r["pdj"]["fractions"], r["pdj"]["curve"], strict=True))
            t.add_row(str(r["stage"]), f"{r['pcp']:.3f}", f"{curve[0.05]:.3f}", f"{r['pdj']['at_0.1']:.3f}",
                      f"{r['pdj']['at_0.2']:.3f}")
        tables.append(t)
    for key, title in (("coco_gt_boxes", "ground-truth boxes"), ("coco_detected_boxes", "detected boxes")):
        if key in report:
            a = report[key]
            t = Table(*[k for k in a if k != "images"], title=f"COCO keypoint AP/AR, {title} ({a['images']} images)")
            t.add_row(*[f"{v:.3f}" for k, v in a.items() if k != "images"])
            tables.append(t)
    return tables
