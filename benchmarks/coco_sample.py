"""A model on the people of a few COCO photos, with COCO's own person boxes: strict PCP over the
8 arm and leg limbs (COCO's joints converted to the model's by name: an LSP-14 model's neck and
head top are not scored) and, for a COCO-17 model, COCO keypoint AP / AR through pycocotools on
`poses.to_coco()` as it is. Draws the skeletons for looking at.

    python benchmarks/coco_sample.py ../shared/datasets/coco-sample \\
        --annotations person_keypoints_sample.json --out runs/coco-look [--weights W] [--[no-]flip] \\
        [--peer runs/peer/mediapipe-coco.json]

`--peer`: COCO-17 results on the same crops (benchmarks/mediapipe_peer.py --coco), scored on the
same persons beside poser: PCP (a person the peer misses counts as wrong) and AP.

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
    args = ap.parse_args()
    ann_file = args.root / args.annotations
    coco = json.loads(ann_file.read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    model = poser.load(args.weights)
    sk = model.skeleton
    args.out.mkdir(parents=True, exist_ok=True)
    preds, gts, peer_preds, results = [], [], [], []
    peer = {r["ann_id"]: r for r in json.loads(args.peer.read_text())} if args.peer else {}
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd"):
            by_image.setdefault(a["image_id"], []).append(a)
    for iid, anns in by_image.items():
        path = next(p for p in args.root.rglob(files[iid]))
        bgr = cv2.imread(str(path))
        boxes = np.array([a["bbox"] for a in anns], float)
        grow = boxes[:, 2:] * PERSON_BOX_MARGIN                 # as poser's training boxes are grown
        boxes = np.concatenate([boxes[:, :2] - grow, boxes[:, 2:] + 2 * grow], 1)
        poses = model(bgr, boxes, flip=args.flip)
        results += poses.to_coco(iid)
        for a, kp in zip(anns, poses.keypoints, strict=True):
            gts.append(convert(np.array(a["keypoints"], float).reshape(17, 3), COCO17, sk))
            preds.append(kp)
            far = np.full((17, 3), -1e6)            # a missed person: every joint wrong
            peer_kp = np.array(peer[a["id"]]["keypoints"], float).reshape(17, 3) if a["id"] in peer else far
            peer_preds.append(convert(peer_kp, COCO17, sk)[:, :2])
        cv2.imwrite(str(args.out / f"{iid}.jpg"), poses.draw(bgr.copy()))
    out = {"persons": len(gts), "skeleton": sk.name} | _scores(np.array(preds), np.array(gts), sk)
    if sk.name == "coco17":
        out["coco_ap"] = _ap(ann_file, results)
    if args.peer:
        out["peer"] = {"file": str(args.peer), "found": len(peer)} | _scores(np.array(peer_preds), np.array(gts), sk)
        out["peer"]["coco_ap"] = _ap(ann_file, [{k: v for k, v in r.items() if k != "ann_id"} for r in peer.values()])
    print(json.dumps(out))


def _scores(pred: np.ndarray, gt: np.ndarray, sk) -> dict:
    res = pcp(pred, gt, sk)
    return {"pcp_arms_legs": round(res["mean"], 3),
            "per_kind": {k: round(v, 3) for k, v in res["per_kind"].items() if v == v}}


def _ap(ann_file: Path, results: list[dict]) -> dict:
    ap = coco_keypoint_ap(ann_file, results, np.asarray(COCO17.sigmas))
    return {k: round(ap[k], 3) for k in ("AP", "AP50", "AP75", "AR")}


if __name__ == "__main__":
    main()
