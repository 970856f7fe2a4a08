"""The cascade: stage-2 sub-images, training data, bundles, and a stage 2 that helps."""

import json
from dataclasses import replace

import numpy as np
import pytest
from typer.testing import CliRunner

from poser.cli import app
from poser.codec import MARGIN
from poser.errors import PoserError
from poser.geometry import box_to_square
from poser.inference.cascade import joint_boxes, pose_diameter
from poser.inference.predictor import Predictor
from poser.models.deeppose import create_model, load_stages
from poser.models.weights import read_meta, save_model
from poser.skeletons import COCO17
from poser.spec import ModelSpec, StageSpec
from poser.train.augment import Augment
from poser.train.config import TrainConfig
from poser.train.loop import fit
from poser.train.stages import error_statistics, sample_crops

runner = CliRunner()


def test_sub_images_are_centred_on_the_estimate_and_sized_by_the_torso():
    coords = np.zeros((1, 17, 2))
    ls, rh = COCO17.torso
    coords[0, ls], coords[0, rh] = (30, 40), (60, 80)          # torso diagonal 50 px
    diam = pose_diameter(coords, COCO17)
    assert diam[0] == pytest.approx(50.0)
    boxes = joint_boxes(coords, np.repeat(diam[:, None], 17, 1), 1.5, MARGIN)
    center, side = box_to_square(boxes, MARGIN)                 # the model crop of each box
    assert np.allclose(center, coords) and np.allclose(side, 75.0)


def test_training_crops_follow_the_previous_stages_error_distribution():
    rng = np.random.default_rng(0)
    n = 400
    gt = np.zeros((n, 17, 3))
    gt[..., :2] = rng.uniform(0, 200, (n, 17, 2))
    gt[..., 2] = 2
    torso = [*COCO17.torso, *COCO17.torso_fallback]
    prev = gt[..., :2] + [10.0, -5.0] + rng.normal(0, 2.0, (n, 17, 2))
    prev[:, torso] = [(0, 0), (30, 40), (30, 0), (0, 40)]         # both diagonals 50 px: diameter 50
    sd = error_statistics(prev, gt, COCO17)
    j = COCO17.index("left_wrist")
    assert sd.mean[j] == pytest.approx([0.2, -0.1], abs=0.01)     # 10 / 50, -5 / 50
    assert np.sqrt(sd.cov[j][[0, 1], [0, 1]]) == pytest.approx([0.04, 0.04], rel=0.2)
    idx = np.arange(n)
    boxes, mask = sample_crops(sd, idx, gt, 1.5, MARGIN, np.random.default_rng(1), p_real=0.0)
    assert (mask.sum(1) == 1).all()
    joint = mask.argmax(1)
    centre, side = box_to_square(boxes, MARGIN)
    off = (centre - gt[idx, joint, :2]) / 50.0
    limbs = ~np.isin(joint, torso)                                # (torso joints: huge, noisy errors here)
    assert (off - sd.mean[joint])[limbs].mean(0) == pytest.approx([0.0, 0.0], abs=0.02)
    assert np.allclose(side, 75.0)
    wrist = joint == j
    assert wrist.sum() > 10 and off[wrist].mean(0) == pytest.approx([0.2, -0.1], abs=0.03)
    real, rmask = sample_crops(sd, idx, gt, 1.5, MARGIN, np.random.default_rng(1), p_real=1.0)
    assert np.allclose(box_to_square(real, MARGIN)[0], prev[idx, rmask.argmax(1)])   # the real predictions


def test_a_stage_two_bundle_without_stage_one_is_a_clear_error(tmp_path):
    m = create_model("mobilenet_v3_small", 17, sigma=False)
    meta = {"skeleton": "coco17", "joints": list(COCO17.joints), "backbone": "mobilenet_v3_small",
            "input_size": 64, "sigma_head": False}
    one = StageSpec.from_meta(meta)
    spec = ModelSpec((one, StageSpec.from_meta(meta | {"stage": 2, "sub_image": 1.5})))
    save_model(tmp_path / "ok.safetensors", [m.state_dict(), m.state_dict()], spec)
    assert one.head == "fc" and one.cache_size == 256 and one.decode_radius is None      # an old file's defaults
    assert len(load_stages(tmp_path / "ok.safetensors")) == 2 and len(load_stages(tmp_path / "ok.safetensors",
                                                                                   stages=1)) == 1
    assert read_meta(tmp_path / "ok.safetensors")["stage"] == 2
    # A bundle that lists two stages but holds stage 2's weights only.
    from poser.models.weights import save_weights

    only2 = {f"stage2.{k}": v for k, v in m.state_dict().items()}
    save_weights(tmp_path / "broken.safetensors", only2, {**meta, "stages": [meta, meta | {"stage": 2}]})
    with pytest.raises(PoserError, match="stage 1 is missing"):
        load_stages(tmp_path / "broken.safetensors")
    with pytest.raises(PoserError, match="stage 1 is missing"):
        Predictor.from_file(tmp_path / "broken.safetensors")


def test_train_stage_two_needs_its_stage_one(synth_root, tmp_path):
    base = ["train", "--data", str(synth_root), "--stage", "2", "--epochs", "1", "--batch-size", "8",
            "--out", str(tmp_path)]
    res = runner.invoke(app, base)
    assert res.exit_code == 1 and "needs --from" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, [*base, "--from", str(tmp_path / "empty")])
    assert res.exit_code == 1 and "no stage-1 model there" in res.output


def test_stage_two_improves_tight_pdj_on_held_out_images(trained_run, learn_root, tmp_path):
    stage1 = json.loads((trained_run / "config.json").read_text())
    cfg = replace(TrainConfig.from_dict(stage1), stage=2, from_run=str(trained_run), out=str(tmp_path),
                  name="stage2", run=None, epochs=3, aug=Augment(flip=0.0))  # +0.09 / +0.15 at 3
    fit(cfg)
    res = runner.invoke(app, ["eval", "--weights", str(tmp_path / "stage2" / "best.safetensors"), "--data",
                              str(learn_root), "--out", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "r.json").read_text())
    s1, s2 = (x["pdj"] for x in r["per_stage"])
    tight = [r["per_stage"][0]["pdj"]["fractions"].index(f) for f in (0.05, 0.1)]
    print("stage 1", [s1["curve"][i] for i in tight], "stage 2", [s2["curve"][i] for i in tight])
    for i in tight:
        assert s2["curve"][i] > s1["curve"][i] + 0.04
    assert "the cascade, stage by stage" in res.output
