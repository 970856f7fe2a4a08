"""poser eval: metric protocol by hand, ground truth scores perfectly, files and errors."""

import json
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from poser.cli import app
from poser.data.cache import Cache, CacheSpec, cache_dir
from poser.evaluate.metrics import pcp, pdj
from poser.evaluate.run import ground_truth
from poser.inference.poses import coco_results
from poser.inference.predictor import Predictor
from poser.skeletons import COCO17, LSP14

runner = CliRunner()
J = {n: i for i, n in enumerate(LSP14.joints)}


def _figure() -> np.ndarray:
    """An upright LSP-14 figure (x, y, v=2): torso diagonal |(100,60)-(40,160)| = 116.6 px."""
    pos = {"right_ankle": (40, 300), "right_knee": (40, 230), "right_hip": (40, 160), "left_hip": (100, 160),
           "left_knee": (100, 230), "left_ankle": (100, 300), "right_wrist": (0, 160), "right_elbow": (20, 110),
           "right_shoulder": (40, 60), "left_shoulder": (100, 60), "left_elbow": (120, 110),
           "left_wrist": (140, 160), "neck": (70, 50), "head_top": (70, 0)}
    gt = np.zeros((1, 14, 3))
    for n, xy in pos.items():
        gt[0, J[n]] = (*xy, 2)
    return gt


def test_a_known_shift_gives_the_expected_pdj_curve():
    gt = np.repeat(_figure(), 3, 0)
    torso = np.hypot(60, 100)
    pred = gt[..., :2] + [0.15 * torso, 0]           # every joint off by 0.15 torso diameters
    r = pdj(pred, gt, LSP14)
    f = np.array(r["fractions"])
    assert r["at_0.1"] == 0.0 and r["at_0.2"] == 1.0
    assert np.array_equal(np.array(r["curve"]) == 1.0, f > 0.15)
    assert r["joints_counted"] == 42


def test_pcp_limb_correct_at_half_wrong_at_0_4_and_missing_predictions_are_wrong():
    gt = _figure()
    pred = gt[..., :2].copy()
    pred[0, J["left_ankle"]] += (31.5, 0)            # 0.45 x the 70 px shin
    assert pcp(pred, gt, LSP14, 0.5)["per_kind"]["lower_leg"] == 1.0
    assert pcp(pred, gt, LSP14, 0.4)["per_kind"]["lower_leg"] == 0.5
    assert pcp(pred, gt, LSP14, 0.4)["mean"] == pytest.approx(7 / 8)
    missing = gt[..., :2].copy()
    missing[0, J["right_wrist"]] = np.nan            # no prediction for one joint
    r = pdj(missing, gt, LSP14)
    assert r["at_0.2"] == pytest.approx(13 / 14) and r["per_joint"]["right_wrist"] == 0.0
    assert pcp(missing, gt, LSP14)["per_kind"]["lower_arm"] == 0.5


def test_persons_without_a_torso_diagonal_are_left_out_of_pdj_but_not_pcp():
    gt = np.repeat(_figure(), 2, 0)
    gt[1, [J["left_shoulder"], J["right_shoulder"]], 2] = 0    # no diagonal for person 2
    pred = gt[..., :2] + [5.0, 0]
    pred[1] += 1000                                              # person 2 entirely wrong
    r = pdj(pred, gt, LSP14)
    assert r["instances_without_torso"] == 1 and r["joints_counted"] == 14 and r["at_0.2"] == 1.0
    c = pcp(pred, gt, LSP14)
    assert c["limbs_counted"] == 11 + 11 - 4                   # person 2 lost both upper arms and torso sides
    assert c["mean"] == pytest.approx(8 / (8 + 6))


def _coco_layout(src, dst):
    (dst / "annotations").mkdir(parents=True)
    shutil.copy(src / "person_keypoints_sample.json", dst / "annotations" / "person_keypoints_val.json")
    (dst / "val").mkdir()
    for p in src.glob("*.jpg"):
        (dst / "val" / p.name).symlink_to(p.resolve())
    return dst


def test_ground_truth_as_prediction_scores_perfectly_on_the_real_coco_sample(coco_sample, tmp_path):
    root = _coco_layout(coco_sample, tmp_path / "coco")
    ann = json.loads((root / "annotations" / "person_keypoints_val.json").read_text())
    gt_results = [{"image_id": a["image_id"], "category_id": 1, "score": 1.0,
                   "keypoints": [v if i % 3 != 2 else 1.0 for i, v in enumerate(a["keypoints"])]}
                  for a in ann["annotations"] if a["num_keypoints"] > 0]
    (tmp_path / "gt.json").write_text(json.dumps(gt_results))
    res = runner.invoke(app, ["eval", "--data", str(root), "--predictions", str(tmp_path / "gt.json"),
                              "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["pcp"]["mean"] == 1.0 and r["pdj"]["at_0.2"] == 1.0 and r["pdj"]["curve"][1] == 1.0
    assert r["coco_gt_boxes"]["AP"] == pytest.approx(1.0) and r["coco_gt_boxes"]["AR"] == pytest.approx(1.0)
    assert r["counted"]["images"] == 4 and r["counted"]["instances"] == 12
    # Drop the predictions for one image: its persons count as wrong, the rest stay right.
    first = gt_results[0]["image_id"]
    (tmp_path / "part.json").write_text(json.dumps([x for x in gt_results if x["image_id"] != first]))
    res = runner.invoke(app, ["eval", "--data", str(root), "--predictions", str(tmp_path / "part.json"),
                              "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "p.json")])
    p = json.loads((tmp_path / "p.json").read_text())
    cache = Cache(cache_dir(root, "val", CacheSpec()))
    gt = ground_truth(cache)
    kept = (gt[..., 2] > 0) & (cache.image_ids != first)[:, None]
    assert p["pdj"]["at_0.2"] == pytest.approx(kept.sum() / (gt[..., 2] > 0).sum())
    assert p["coco_gt_boxes"]["AP"] < 1.0


def test_eval_of_a_trained_model_writes_numbers_plots_and_examples(trained_run, learn_root, tmp_path):
    weights = trained_run / "best.safetensors"
    res = runner.invoke(app, ["eval", "--weights", str(weights), "--data", str(learn_root), "--out",
                              str(tmp_path), "--json", str(tmp_path / "r.json"), "--device", "cpu",
                              "--runtime", "torch"])     # as training validates: torch fp32, not bf16
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "r.json").read_text())
    best = max((json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()),
               key=lambda x: x["val_pdj@0.2"])
    assert r["pdj"]["at_0.2"] == pytest.approx(best["val_pdj@0.2"], abs=2e-3)   # eval == training's validation
    assert r["pcp"]["mean"] == pytest.approx(best["val_pcp"], abs=2e-3)
    assert 0.0 < r["coco_gt_boxes"]["AP"] <= 1.0 and "PCP@0.5" in res.output
    run = tmp_path / "exp1"
    for name, min_wh in (("pdj_curve.png", 300), ("pdj_per_joint.png", 300), ("examples.png", 256)):
        img = cv2.imread(str(run / name))
        assert img is not None and min(img.shape[:2]) >= min_wh, name
        assert img.std() > 10, name                     # not blank
    preds = json.loads((run / "predictions.json").read_text())
    assert len(preds) == r["counted"]["instances"] and len(preds[0]["keypoints"]) == 51
    # Scoring the saved predictions reproduces the model's numbers.
    res = runner.invoke(app, ["eval", "--predictions", str(run / "predictions.json"), "--data", str(learn_root),
                              "--out", str(tmp_path), "--json", str(tmp_path / "p.json")])
    p = json.loads((tmp_path / "p.json").read_text())
    assert p["pdj"]["at_0.2"] == pytest.approx(r["pdj"]["at_0.2"], abs=1e-3)
    assert p["coco_gt_boxes"]["AP"] == pytest.approx(r["coco_gt_boxes"]["AP"], abs=1e-3)
    # Ground-truth boxes given as detections give the same AP as the ground-truth-box protocol.
    ann = json.loads((learn_root / "annotations" / "person_keypoints_val.json").read_text())
    dets = [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0}
            for a in ann["annotations"] if a["num_keypoints"] > 0]
    (tmp_path / "dets.json").write_text(json.dumps(dets + [{"image_id": dets[0]["image_id"], "bbox": [0, 0, 5, 5],
                                                             "score": 0.01}]))
    res = runner.invoke(app, ["eval", "--weights", str(weights), "--data", str(learn_root), "--out", str(tmp_path),
                              "--boxes", str(tmp_path / "dets.json"), "--box-threshold", "0.5", "--json",
                              str(tmp_path / "d.json"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "d.json").read_text())
    assert d["coco_detected_boxes"]["AP"] == pytest.approx(d["coco_gt_boxes"]["AP"], abs=0.02)


def test_flip_test_is_mirror_symmetric_and_results_use_cocos_format(trained_run, learn_root):
    # With --flip, predicting a mirrored photo gives the mirrored prediction (labels swapped):
    # the flip test averages both views exactly.
    pred = Predictor.from_file(trained_run / "best.safetensors")
    ann = json.loads((learn_root / "annotations" / "person_keypoints_val.json").read_text())
    a0 = ann["annotations"][0]
    name = next(i["file_name"] for i in ann["images"] if i["id"] == a0["image_id"])
    img = cv2.imread(str(learn_root / "val" / name), cv2.IMREAD_COLOR_RGB)
    w = img.shape[1]
    box = np.array([a0["bbox"]], np.float64)
    mirrored_box = box.copy()
    mirrored_box[0, 0] = (w - 1) - box[0, 0] - box[0, 2]      # pixel-centre frame: x -> W - 1 - x
    a = pred.predict_image(img, box, flip=True)
    b = pred.predict_image(np.ascontiguousarray(img[:, ::-1]), mirrored_box, flip=True)
    back = b.keypoints[:, COCO17.flip_index].copy()
    back[..., 0] = (w - 1) - back[..., 0]
    assert np.abs(back - a.keypoints).max() < 0.05
    assert np.abs(pred.predict_image(img, box).keypoints - a.keypoints).max() > 0.5   # flip changed something
    out = coco_results(np.array([7, 7]), np.zeros((2, 17, 2)), np.full((2, 17), 0.5))
    assert out[0] == {"image_id": 7, "category_id": 1, "keypoints": [0.0, 0.0, 0.5] * 17, "score": 0.5}


def test_eval_errors_are_one_line(synth_root, tmp_path):
    (tmp_path / "bad.json").write_text("[not json")
    (tmp_path / "short.json").write_text(json.dumps([{"image_id": 1, "keypoints": [1, 2, 3]}]))
    cases = [
        (["--data", str(synth_root), "--predictions", str(tmp_path / "bad.json")], "not readable JSON"),
        (["--data", str(synth_root), "--predictions", str(tmp_path / "short.json")], "51 keypoint values"),
        (["--data", str(tmp_path / "nowhere"), "--predictions", str(tmp_path / "bad.json")], "no such folder"),
        (["--data", str(synth_root), "--weights", str(tmp_path / "bad.json")], "not a safetensors"),
    ]
    for args, msg in cases:
        res = runner.invoke(app, ["eval", *args, "--out", str(tmp_path / "runs")])
        assert res.exit_code == 1 and msg in res.output and "Traceback" not in res.output, (args, res.output)


def test_eval_whole_image_runs_the_person_search_on_the_photos(trained_run, learn_root, tmp_path):
    weights = str(trained_run / "best.safetensors")
    args = ["eval", "--weights", weights, "--data", str(learn_root), "--out", str(tmp_path), "--device", "cpu",
            "--limit", "60"]
    res = runner.invoke(app, [*args, "--whole-image", "--json", str(tmp_path / "w.json")])
    assert res.exit_code == 0, res.output
    w = json.loads((tmp_path / "w.json").read_text())
    res = runner.invoke(app, [*args, "--json", str(tmp_path / "b.json")])
    b = json.loads((tmp_path / "b.json").read_text())
    assert w["protocol"].startswith("whole photo") and b["protocol"] == "ground-truth person boxes"
    assert w["counted"]["instances"] == b["counted"]["instances"] == 60
    # One person found per photo: photos with two people lose one of them, the rest score close
    # to the ground-truth boxes' numbers.
    assert 0.1 < w["pdj"]["at_0.2"] <= b["pdj"]["at_0.2"] + 0.05, (w["pdj"]["at_0.2"], b["pdj"]["at_0.2"])
    res = runner.invoke(app, ["eval", "--predictions", str(tmp_path / "x.json"), "--whole-image", "--data",
                              str(learn_root)])
    assert res.exit_code == 1 and "does not apply to --predictions" in res.output
