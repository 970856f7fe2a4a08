"""Written JSON is strict; non-finite predictions are misses in every metric."""

import json

import numpy as np

from poser.evaluate.metrics import coco_keypoint_ap, pcp, pdj
from poser.files import write_json
from poser.runs import append_jsonl
from poser.skeletons import COCO17


def test_written_json_is_strict(tmp_path):
    write_json(tmp_path / "a.json", {"x": float("nan"), "y": [1.0, float("inf")], "z": 2})
    text = (tmp_path / "a.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"x": None, "y": [1.0, None], "z": 2}
    append_jsonl(tmp_path / "m.jsonl", {"loss": float("nan")})
    assert json.loads((tmp_path / "m.jsonl").read_text()) == {"loss": None}


def test_non_finite_predictions_are_misses_in_pcp_pdj_and_ap(coco_sample):
    from poser.data.coco import read_coco

    ann = coco_sample / "person_keypoints_sample.json"
    inst = read_coco(ann, coco_sample)
    gt = inst.keypoints
    nan = np.full(gt[..., :2].shape, np.nan)
    assert pcp(nan, gt, COCO17)["mean"] == 0.0 and pdj(nan, gt, COCO17)["at_0.2"] == 0.0
    ids = inst.image_ids[inst.image_index]

    def results(xy):
        return [{"image_id": int(i), "category_id": 1, "score": 1.0,
                 "keypoints": np.concatenate([p, np.ones((17, 1))], -1).ravel().tolist()}
                for i, p in zip(ids, xy, strict=True)]

    ap_nan = coco_keypoint_ap(ann, results(nan), np.asarray(COCO17.sigmas), ids)["AP"]
    ap_zero = coco_keypoint_ap(ann, results(np.zeros_like(nan)), np.asarray(COCO17.sigmas), ids)["AP"]
    ap_true = coco_keypoint_ap(ann, results(gt[..., :2]), np.asarray(COCO17.sigmas), ids)["AP"]
    assert ap_nan == ap_zero == 0.0 and ap_true > 0.9
