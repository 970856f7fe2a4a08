"""A model on the people of a few COCO photos, with COCO's own person boxes: strict PCP over the
8 arm and leg limbs (COCO's joints converted to the model's by name: an LSP-14 model's neck and
head top are not scored) and, for a COCO-17 model, COCO keypoint AP / AR through pycocotools on
`poses.to_coco()` as it is. Draws the skeletons for looking at.

    python benchmarks/coco_sample.py ../shared/datasets/coco-sample \\
        --annotations person_keypoints_sample.json --out runs/coco-look [--weights W] [--[no-]flip] \\
        [--peer runs/peer/mediapipe-coco.json] [--grow 0 0.05 0.1 0.15 0.2]

`--peer`: COCO-17 results on the same crops (benchmarks/mediapipe_peer.py --coco), scored on the
same persons beside poser: PCP (a person the peer misses counts as wrong) and AP. `--grow`: how
much COCO's box is grown a side (default 0.15, as poser's training boxes); several growths score
each and print their mean: 12 people are 86 limbs, and one growth against another moves a model
by up to 0.05 PCP, so the mean over growths is what tells two models apart.

The drawn photos are for looking at here; never commit them (the photos are COCO's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

import poser
from poser.evaluate.metrics import coco_keypoint_ap, pcp
from poser.geometry import PERSON_BOX_MARGIN
from poser.skeletons import COCO17, convert


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--annotations", default="person_keypoints_sample.json")
    ap.add_argument("--out", type=Path, default=Path("runs/coco-look"))
    ap.add_argument("--weights", default=None)
    ap.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                    help="the flip test [default: the model's own setting]")
    ap.add_argument("--peer", type=Path, default=None)
    ap.add_argument("--grow", type=float, nargs="+", default=[PERSON_BOX_MARGIN],
                    help="grow COCO's boxes this much a side [default: as poser's training boxes]; "
                         "several: scored at each, and their mean")
    args = ap.parse_args()
    model = poser.load(args.weights)
    args.out.mkdir(parents=True, exist_ok=True)
    peer = json.loads(args.peer.read_text()) if args.peer else []
    coco = json.loads((args.root / args.annotations).read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd"):
            by_image.setdefault(a["image_id"], []).append(a)
    photos = {iid: cv2.imread(str(next(args.root.rglob(files[iid])))) for iid in by_image}   # once, for every growth
    runs = [_at_growth(model, args, g, by_image, photos,
                       {r["ann_id"]: r for r in peer if r.get("grow", PERSON_BOX_MARGIN) == g}) for g in args.grow]
    if len(runs) == 1:
        print(json.dumps(runs[0]))
        return
    # One growth is one crop of each person: with 12 people a few limbs move with it, as much
    # as two models differ, so the mean over growths is the number to compare.
    mean = {"pcp_arms_legs": round(float(np.mean([r["pcp_arms_legs"] for r in runs])), 3)}
    if args.peer:
        mean["peer"] = round(float(np.mean([r["peer"]["pcp_arms_legs"] for r in runs])), 3)
    print(json.dumps({"grows": runs, "mean": mean}))


def _at_growth(model, args: argparse.Namespace, grow: float, by_image: dict, photos: dict, peer: dict) -> dict:
    """Every annotated person (`by_image`, of the BGR `photos`) through `model` with COCO's box
    grown `grow` a side; scored beside the peer's results at the same growth."""
    ann_file = args.root / args.annotations
    sk = model.skeleton
    preds, gts, peer_preds, results = [], [], [], []
    for iid, anns in by_image.items():
        bgr = photos[iid]
        boxes = np.array([a["bbox"] for a in anns], float)
        margin = boxes[:, 2:] * grow
        boxes = np.concatenate([boxes[:, :2] - margin, boxes[:, 2:] + 2 * margin], 1)
        poses = model(bgr, boxes, flip=args.flip)
        results += poses.to_coco(iid)
        for a, kp in zip(anns, poses.keypoints, strict=True):
            gts.append(convert(np.array(a["keypoints"], float).reshape(17, 3), COCO17, sk))
            preds.append(kp)
            far = np.full((17, 3), -1e6)            # a missed person: every joint wrong
            peer_kp = np.array(peer[a["id"]]["keypoints"], float).reshape(17, 3) if a["id"] in peer else far
            peer_preds.append(convert(peer_kp, COCO17, sk)[:, :2])
        cv2.imwrite(str(args.out / f"{iid}-grow{grow:g}.jpg"), poses.draw(bgr.copy()))
    out = {"grow": grow, "persons": len(gts), "skeleton": sk.name} | _scores(np.array(preds), np.array(gts), sk)
    if sk.name == "coco17":
        out["coco_ap"] = _ap(ann_file, results)
    if args.peer:
        out["peer"] = {"file": str(args.peer), "found": len(peer)} | _scores(np.array(peer_preds), np.array(gts), sk)
        out["peer"]["coco_ap"] = _ap(ann_file, [{k: v for k, v in r.items() if k not in ("ann_id", "grow")}
                                               for r in peer.values()])
    return out


def _scores(pred: np.ndarray, gt: np.ndarray, sk) -> dict:
    res = pcp(pred, gt, sk)
    return {"pcp_arms_legs": round(res["mean"], 3),
            "per_kind": {k: round(v, 3) for k, v in res["per_kind"].items() if v == v}}


def _ap(ann_file: Path, results: list[dict]) -> dict:
    ap = coco_keypoint_ap(ann_file, results, np.asarray(COCO17.sigmas))
    return {k: round(ap[k], 3) for k in ("AP", "AP50", "AP75", "AR")}


if __name__ == "__main__":
    main()
