"""MediaPipe BlazePose as the peer, on the same photos poser is measured on.

Runs in its own venv (MediaPipe is never a poser dependency):

    python3 -m venv mpvenv && mpvenv/bin/pip install "mediapipe==0.10.14"
    mpvenv/bin/python benchmarks/mediapipe_peer.py data/lspet/images --first 8001 --last 9000 \
        --out runs/peer/mediapipe.json
    poser eval --data data/lspet --predictions runs/peer/mediapipe.json

Whole photo, no box (BlazePose's own person detector), `static_image_mode` (every photo on its
own), model_complexity 1 ("full"). Writes COCO keypoint results in LSP-14 order, image_id = the
photo's number (im08001 -> 8001, as poser's LSP reader numbers them), and prints images/s
(photo decode included; the process start is in the caller's `time`).

BlazePose's 33 landmarks -> LSP-14 (both name left/right as the person's own):
right ankle 28, right knee 26, right hip 24, left hip 23, left knee 25, left ankle 27,
right wrist 16, right elbow 14, right shoulder 12, left shoulder 11, left elbow 13,
left wrist 15; neck = the shoulders' midpoint; head top (BlazePose has none) = the nose moved
away from the neck by half the neck-to-nose distance. Neck and head top are approximations;
the headline PCP (arms and legs) uses neither. A photo where BlazePose finds nobody gets no
result (its person counts as missed).

`--coco ANNOTATIONS` runs it instead on the crops poser's model sees for each annotated person of a
COCO keypoint file (the box grown by each of `--grow` a side, squared, x 1.25; black beyond the
photo), and writes COCO-17 results with the annotation's id (`ann_id`) and the growth (`grow`), for
benchmarks/coco_sample.py --peer:

    mpvenv/bin/python benchmarks/mediapipe_peer.py ../shared/datasets/coco-sample \
        --coco person_keypoints_sample.json --grow 0 0.05 0.1 0.15 0.2 --out runs/peer/mediapipe-coco.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

LSP_FROM_BLAZEPOSE = [28, 26, 24, 23, 25, 27, 16, 14, 12, 11, 13, 15]
COCO_FROM_BLAZEPOSE = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]


def to_lsp(lm: np.ndarray) -> np.ndarray:
    """(33, 3) BlazePose landmarks (x px, y px, visibility) -> (14, 3) LSP-14 (x, y, score)."""
    out = np.zeros((14, 3))
    out[:12] = lm[LSP_FROM_BLAZEPOSE]
    neck = (lm[11] + lm[12]) / 2
    out[12] = neck
    out[13, :2] = lm[0, :2] + 0.5 * (lm[0, :2] - neck[:2])
    out[13, 2] = lm[0, 2]
    return out


def person_crop(bgr: np.ndarray, box, margin: float = 0.15, square: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """poser's crop of a person box (xywh): the box grown `margin` a side, squared, x `square`.
    Returns the crop and its top-left corner in the photo (the crop is at the photo's scale)."""
    x, y, w, h = box
    x, y, w, h = x - margin * w, y - margin * h, w * (1 + 2 * margin), h * (1 + 2 * margin)
    side = int(round(max(w, h) * square))
    x0, y0 = int(round(x + w / 2 - side / 2)), int(round(y + h / 2 - side / 2))
    crop = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, bgr.shape[1]), min(y0 + side, bgr.shape[0])
    crop[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = bgr[sy0:sy1, sx0:sx1]
    return crop, np.array([x0, y0], float)


def coco_crops(root: Path, annotations: str, out: Path, complexity: int, grows: tuple[float, ...] = (0.15,)) -> None:
    import mediapipe as mp

    coco = json.loads((root / annotations).read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    results = []
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=complexity) as pose:
        people = [a for a in coco["annotations"] if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd")]
        photos = {iid: cv2.imread(str(next(root.rglob(files[iid])))) for iid in {a["image_id"] for a in people}}
        for grow in grows:
            for a in people:
                crop, corner = person_crop(photos[a["image_id"]], a["bbox"], grow)
                found = pose.process(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)).pose_landmarks
                if found is None:
                    continue
                side = crop.shape[0]
                lm = np.array([[p.x * side + corner[0], p.y * side + corner[1], p.visibility] for p in found.landmark])
                kp = lm[COCO_FROM_BLAZEPOSE]
                results.append({"image_id": a["image_id"], "ann_id": a["id"], "grow": grow, "category_id": 1,
                                "keypoints": [round(float(v), 2) for v in kp.ravel()],
                                "score": float(kp[:, 2].mean())})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results))
    print(json.dumps({"persons_found": len(results)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("images", type=Path)
    ap.add_argument("--first", type=int, default=8001)
    ap.add_argument("--last", type=int, default=9000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--complexity", type=int, default=1)
    ap.add_argument("--coco", default=None, help="a COCO keypoint file below IMAGES: crops mode (see above)")
    ap.add_argument("--grow", type=float, nargs="+", default=[0.15],
                    help="--coco: grow each box this much a side first (several: crops at each)")
    args = ap.parse_args()
    if args.coco:
        return coco_crops(args.images, args.coco, args.out, args.complexity, tuple(args.grow))
    import mediapipe as mp

    files = [args.images / f"im{n:05d}.jpg" for n in range(args.first, args.last + 1)]
    results, t0 = [], time.perf_counter()
    with mp.solutions.pose.Pose(static_image_mode=True, model_complexity=args.complexity) as pose:
        for n, f in zip(range(args.first, args.last + 1), files, strict=True):
            bgr = cv2.imread(str(f))
            if bgr is None:
                continue
            h, w = bgr.shape[:2]
            found = pose.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).pose_landmarks
            if found is None:
                continue
            lm = np.array([[p.x * w, p.y * h, p.visibility] for p in found.landmark])
            kp = to_lsp(lm)
            results.append({"image_id": n, "category_id": 1, "keypoints": [round(float(v), 2) for v in kp.ravel()],
                            "score": float(kp[:, 2].mean())})
    dt = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results))
    print(json.dumps({"images": len(files), "found": len(results), "seconds": round(dt, 2),
                      "images_per_s": round(len(files) / dt, 2)}))


if __name__ == "__main__":
    main()
