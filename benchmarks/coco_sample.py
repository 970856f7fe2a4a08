"""An LSP-14 model on COCO photos: strict PCP over the 8 arm and leg limbs, with COCO's own
person boxes, COCO joints mapped to LSP-14 (the 12 limb joints exist in both; LSP's neck and
head top have no COCO counterpart and are not scored). Draws the skeletons for looking at.

    python benchmarks/coco_lsp_pcp.py ../shared/datasets/coco-sample \\
        --annotations person_keypoints_sample.json --out runs/coco-look [--weights W] [--flip] \\
        [--peer runs/peer/mediapipe-coco.json]

`--peer`: COCO-17 results on the same crops (benchmarks/mediapipe_peer.py --coco), scored on the
same persons beside poser (a person the peer misses counts as wrong).

The drawn photos are for looking at here; never commit them (the photos are COCO's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

import poser
from poser.evaluate.metrics import pcp
from poser.geometry import PERSON_BOX_MARGIN
from poser.skeletons import COCO17, LSP14

# LSP-14 joint -> COCO-17 joint (None: no COCO counterpart)
LSP_FROM_COCO = {"right_ankle": "right_ankle", "right_knee": "right_knee", "right_hip": "right_hip",
                 "left_hip": "left_hip", "left_knee": "left_knee", "left_ankle": "left_ankle",
                 "right_wrist": "right_wrist", "right_elbow": "right_elbow", "right_shoulder": "right_shoulder",
                 "left_shoulder": "left_shoulder", "left_elbow": "left_elbow", "left_wrist": "left_wrist"}


def coco_to_lsp(kp: np.ndarray) -> np.ndarray:
    """(17, 3) COCO keypoints -> (14, 3) LSP-14 with unmapped joints unlabelled."""
    out = np.zeros((14, 3))
    for j, name in enumerate(LSP14.joints):
        src = LSP_FROM_COCO.get(name)
        if src is not None:
            out[j] = kp[COCO17.joints.index(src)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--annotations", default="person_keypoints_sample.json")
    ap.add_argument("--out", type=Path, default=Path("runs/coco-look"))
    ap.add_argument("--weights", default=None)
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--peer", type=Path, default=None)
    args = ap.parse_args()
    coco = json.loads((args.root / args.annotations).read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    model = poser.load(args.weights)
    args.out.mkdir(parents=True, exist_ok=True)
    preds, gts, peer_preds = [], [], []
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
        for a, kp in zip(anns, poses.keypoints, strict=True):
            gts.append(coco_to_lsp(np.array(a["keypoints"], float).reshape(17, 3)))
            preds.append(kp)
            far = np.full((17, 3), -1e6)            # a missed person: every joint wrong
            peer_kp = np.array(peer[a["id"]]["keypoints"], float).reshape(17, 3) if a["id"] in peer else far
            peer_preds.append(coco_to_lsp(peer_kp)[:, :2])
        cv2.imwrite(str(args.out / f"{iid}.jpg"), poses.draw(bgr.copy()))
    res = pcp(np.array(preds), np.array(gts), LSP14)
    out = {"persons": len(gts), "pcp_arms_legs": round(res["mean"], 3),
           "per_kind": {k: round(v, 3) for k, v in res["per_kind"].items() if v == v}}
    if args.peer:
        p = pcp(np.array(peer_preds), np.array(gts), LSP14)
        out["peer"] = {"file": str(args.peer), "found": len(peer), "pcp_arms_legs": round(p["mean"], 3),
                       "per_kind": {k: round(v, 3) for k, v in p["per_kind"].items() if v == v}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
