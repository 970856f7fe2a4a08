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

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from poser.console import log, progress
from poser.data.cache import Cache, CacheSpec, cache_dir
from poser.data.datasets import coco_split_files, dataset_skeleton
from poser.data.prepare import prepare_split
from poser.errors import PoserError
from poser.evaluate.config import EvalConfig, Predicted, Split
from poser.evaluate.metrics import coco_keypoint_ap, pcp, pdj, score_reliability
from poser.evaluate.photos import predict_detected_people, search_photos
from poser.evaluate.predictions import match_predictions, read_results
from poser.evaluate.report import example_grid, plot_pdj, plot_per_joint
from poser.files import write_json
from poser.inference.assemble import load_predictor
from poser.inference.poses import coco_results
from poser.inference.predictor import Predictor, cache_to_image, resolve_weights
from poser.models.weights import read_spec
from poser.runs import check_run_name, check_writable, new_run_dir
from poser.skeletons import Skeleton, convert, get_skeleton, unlabelled_in
from poser.spec import ModelSpec


def evaluate(cfg: EvalConfig) -> dict:
    """Score a model (or saved predictions) on one split; writes the run folder, returns
    every number. Reads top to bottom: check every option, load the split, predict by the
    protocol asked, score, write."""
    cfg = with_defaults(cfg)
    spec = check(cfg)
    data = load_split(cfg, spec)
    predictor = load_predictor(cfg.weights, cfg.device, cfg.stages, cfg.runtime, cfg.precision) if cfg.weights \
        else None
    if predictor is not None and cfg.flip is None:
        cfg = replace(cfg, flip=predictor.flip_test)        # the model's own default
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
    if cfg.predictions is None:         # no weights: the shipped model; a shipped model's name: its file
        cfg = replace(cfg, weights=str(resolve_weights(cfg.weights)))
    if cfg.data is None:
        skeleton = read_spec(Path(cfg.weights)).skeleton if cfg.weights else None
        cfg = replace(cfg, data="data/lspet" if skeleton == "lsp14" else "data/coco")
    return cfg


def check(cfg: EvalConfig) -> ModelSpec | None:
    """Every option combination and input, before any work: one line each."""
    if cfg.weights is None and cfg.predictions is None:
        raise PoserError("nothing to score: give a model (`weights`) or saved predictions (`predictions`)")
    if cfg.weights is not None and cfg.predictions is not None:
        raise PoserError("give a model (`weights`) or saved predictions (`predictions`), not both")
    if cfg.whole_image and cfg.predictions:
        raise PoserError("`whole_image` runs a model on the photos; it does not apply to `predictions`")
    if cfg.boxes and cfg.detector:
        raise PoserError("give `boxes` or `detector`, not both")
    if (cfg.boxes or cfg.detector) and cfg.predictions:
        raise PoserError("`boxes` and `detector` need a model (`weights`)")
    check_run_name(cfg.name)
    spec = read_spec(Path(cfg.weights)) if cfg.weights else None   # a bad weights file fails first
    root = Path(cfg.data)
    if not root.is_dir():
        raise PoserError(f"`data` {root}: no such folder (make one with poser fetch-lsp, fetch-coco or synth)")
    skeleton = dataset_skeleton(root, cfg.split)
    if (cfg.boxes or cfg.detector) and (skeleton != "coco17" or coco_split_files(root, cfg.split) is None):
        raise PoserError("`boxes` and `detector` give COCO AP, which needs COCO-17 data in COCO format")
    if spec is not None and spec.skeleton != skeleton:
        check_skeletons(get_skeleton(skeleton), get_skeleton(spec.skeleton), root)
    if cfg.boxes and not Path(cfg.boxes).is_file():
        raise PoserError(f"`boxes` {cfg.boxes}: no such file")
    if cfg.predictions and not Path(cfg.predictions).is_file():
        raise PoserError(f"`predictions` {cfg.predictions}: no such file")
    check_writable(Path(cfg.out))
    return spec


def check_skeletons(data: Skeleton, model: Skeleton, root: Path) -> None:
    """Other joints than the model's: scored on the joints both have (a COCO-17 model on LSP
    data: its limbs), or one line saying which weights or data would fit."""
    try:
        convert(np.zeros((1, data.num_joints, 3)), data, model)
    except PoserError:
        fix = "`data` of an LSP dataset (poser fetch-lsp)" if model.name == "lsp14" else f"`data` of {model.name} data"
        raise PoserError(f"the model predicts {model.name} joints but {root} is {data.name} data: give `weights` of "
                         f"a {data.name} model (poser train on this data makes one), or {fix}") from None
    log.info(f"{root} is {data.name} data: the model's {', '.join(unlabelled_in(data, model))} are not scored")


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
    sk = get_skeleton(spec.skeleton) if spec is not None else cache.skeleton
    coco = ann and sk.name == cache.skeleton.name == "coco17"
    return Split(root, cache, convert(ground_truth(cache)[:n], cache.skeleton, sk), cache.image_ids[:n],
                 ann[0] if coco else None, np.asarray(sk.sigmas), sk)


def protocol_name(cfg: EvalConfig) -> str:
    if cfg.predictions:
        return "saved predictions, matched to the people of each image"
    flip = ", flip test" if cfg.flip else ""
    if cfg.whole_image:
        return f"whole photo, person search ({cfg.search_passes} passes after the first){flip}"
    return f"ground-truth person boxes{flip}"


def predict(cfg: EvalConfig, predictor: Predictor | None, data: Split) -> Predicted:
    """Predictions by protocol: saved ones, the person search on whole photos, or the model on
    the ground-truth boxes (the prepared crops)."""
    if predictor is None:
        results = read_results(Path(cfg.predictions), data.skeleton)
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
    coords = cache_to_image(data.cache, p.keypoints)
    stages = np.stack([cache_to_image(data.cache, p.stages[:, s]) for s in range(p.stages.shape[1])], 1)
    return Predicted(coords, p.scores, coco_results(data.ids, coords, p.scores), stages)


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
    out = {"pcp": pcp(pred.keypoints, gt, sk, cfg.pcp_threshold) | {"threshold": cfg.pcp_threshold},
           "pdj": pdj(pred.keypoints, gt, sk), "scores": score_reliability(pred.keypoints, pred.scores, gt, sk)}
    if pred.stages is not None and pred.stages.shape[1] > 1:
        out["per_stage"] = [{"stage": s + 1, "pcp": pcp(pred.stages[:, s], gt, sk, cfg.pcp_threshold)["mean"],
                             "pdj": pdj(pred.stages[:, s], gt, sk)} for s in range(pred.stages.shape[1])]
    out["counted"] = {"images": int(len(np.unique(data.ids))), "instances": int(len(data.ids)),
                      "joints": out["pdj"]["joints_counted"], "limbs": out["pcp"]["limbs_counted"],
                      "instances_without_torso": out["pdj"]["instances_without_torso"]}
    if pred.matching is not None:
        out["counted"]["predictions"] = pred.matching
    return out


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
    example_grid(data.cache, pred.keypoints, data.gt, data.skeleton, run / "examples.png")


def ground_truth(cache: Cache) -> np.ndarray:
    """(N, K, 3) ground-truth keypoints in original image pixels (flags kept)."""
    gt = cache.keypoints.astype(np.float64).copy()
    gt[..., :2] = cache_to_image(cache, gt[..., :2])
    return gt




def evaluate_cache(predictor: Predictor, cache: Cache, flip: bool = False, batch_size: int = 64,
                   limit: int | None = None, progress=None, pcp_threshold: float = 0.5) -> tuple[dict, dict]:
    """Predict every instance of a prepared cache (the first `limit`) and score PCP and PDJ;
    both are similarity-invariant, so cache-crop pixels score as image pixels do. Returns the
    predictions (cache-crop pixels) and the metrics."""
    p = predictor.predict_cache(cache, flip, batch_size, limit, progress)
    sk = predictor.skeleton
    gt = convert(cache.keypoints[: len(p)], cache.skeleton, sk)      # joints the data lacks: not scored
    return p, {"pcp": pcp(p.keypoints, gt, sk, pcp_threshold), "pdj": pdj(p.keypoints, gt, sk)}


# --- pictures -------------------------------------------------------------------------------


# --- tables ---------------------------------------------------------------------------------

