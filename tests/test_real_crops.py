"""Crops of real photos put the keypoints where they belong: the shared geometry moves
pixels and joints together on real data (COCO sample and LSPET)."""

import cv2
import numpy as np

from poser import geometry as g
from poser.codec import MARGIN
from poser.data.coco import read_coco
from poser.data.lsp import read_lsp


def _alignment_errors(inst, rows, size=128, rng=None):
    """Mean colour difference between each visible joint's pixel in the photo and in the
    crop; the same with the crop point shifted by 10% of the crop (a misplaced joint)."""
    aligned, shifted = [], []
    for i in rows:
        img = cv2.imread(str(inst.path(i))).astype(np.float32)
        center, side = g.box_to_square(inst.boxes[i], MARGIN)
        m = g.crop_matrix(center, side, size, rotation=rng.uniform(-30, 30))
        crop = cv2.GaussianBlur(g.warp_image(img, m, size), (5, 5), 0)
        blurred = cv2.GaussianBlur(img, (0, 0), max(0.5, 2.0 * side / size / 2))
        kp = inst.keypoints[i]
        vis = kp[:, 2] == 2
        pts = g.transform_points(m, kp[vis, :2])
        for p, q in zip(kp[vis, :2], pts, strict=True):
            if not (3 <= q[0] < size - 3 - 13 and 3 <= q[1] < size - 3):
                continue
            src = cv2.getRectSubPix(blurred, (1, 1), tuple(map(float, p)))[0, 0]
            aligned.append(np.abs(cv2.getRectSubPix(crop, (1, 1), tuple(map(float, q)))[0, 0] - src).mean())
            shifted.append(np.abs(cv2.getRectSubPix(crop, (1, 1), (float(q[0]) + 13, float(q[1])))[0, 0] - src).mean())
    return np.mean(aligned), np.mean(shifted), len(aligned)


def test_coco_sample_crops_keep_keypoints_on_the_person(coco_sample, tmp_path):
    inst = read_coco(coco_sample / "person_keypoints_sample.json", coco_sample)
    aligned, shifted, n = _alignment_errors(inst, range(len(inst)), rng=np.random.default_rng(0))
    assert n > 80
    assert aligned < 0.15 * shifted, (aligned, shifted)


def test_lspet_crops_keep_keypoints_on_the_person(lspet):
    inst = read_lsp(lspet)
    rows = np.random.default_rng(1).choice(len(inst), 60, replace=False)
    aligned, shifted, n = _alignment_errors(inst, rows, rng=np.random.default_rng(2))
    assert n > 400
    assert aligned < 0.15 * shifted, (aligned, shifted)
