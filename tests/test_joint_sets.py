"""Models whose joints differ from the data's (skeletons.convert): a joint the data does not
label gives no loss and no metric, for every skeleton pair; --init maps a head's joints by name;
the teacher's heatmaps (--distill) are soft targets on the joints it knows."""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from poser.cli import app
from poser.errors import PoserError
from poser.evaluate.metrics import pcp
from poser.models.deeppose import create_model, load_model
from poser.models.weights import read_spec
from poser.skeletons import BODY19, COCO17, LSP14, SKELETONS, Skeleton, convert, unlabelled_in
from poser.train.config import TrainConfig
from poser.train.distill import teacher_channels
from poser.train.losses import PoseLoss, distill_kl
from poser.train.stages import init_from

runner = CliRunner()


def _poses(sk: Skeleton, n: int = 5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kp = np.concatenate([rng.uniform(0, 100, (n, sk.num_joints, 2)), np.full((n, sk.num_joints, 1), 2.0)], -1)
    return kp


@pytest.mark.parametrize("src,dst", list(itertools.permutations(SKELETONS.values(), 2)))
def test_convert_carries_shared_joints_and_leaves_the_others_unlabelled(src, dst):
    kp = _poses(src)
    out = convert(kp, src, dst)
    assert out.shape == (5, dst.num_joints, 3)
    for j, name in enumerate(dst.joints):
        if name in src.joints:
            assert np.array_equal(out[:, j], kp[:, src.index(name)])
        else:
            assert name in unlabelled_in(src, dst) and not out[:, j].any()
    back = convert(out, dst, src)               # a round trip keeps every shared joint
    shared = [src.index(n) for n in src.joints if n in dst.joints]
    assert np.array_equal(back[:, shared], kp[:, shared])
    # PCP of the converted poses against themselves: every arm and leg limb counted and right
    res = pcp(out[..., :2], out, dst)
    assert res["mean"] == 1.0 and res["limbs_counted"] >= 5 * 8


def test_unlabelled_joints_give_no_loss():
    """LSP data for a COCO-17 model: the face joints, whatever the model says there, cost nothing."""
    kp = convert(_poses(LSP14), LSP14, COCO17)
    weight = torch.tensor(kp[..., 2] > 0, dtype=torch.float32)
    target = torch.tensor(kp[..., :2] / 100 - 0.5, dtype=torch.float32)
    vis = weight.clone()
    known = torch.tensor([float(n in LSP14.joints) for n in COCO17.joints])
    loss = PoseLoss("l1", known=known)
    out = {"coords": target.clone(), "visible": torch.full(weight.shape, 20.0)}
    base, _ = loss(out, target, weight, vis)
    out["coords"][:, :5] += 3.0                    # nose, eyes, ears far off, and said to be invisible
    out["visible"][:, :5] = -20.0
    moved, _ = loss(out, target, weight, vis)
    assert float(moved) == pytest.approx(float(base)) and float(base) < 0.01
    out["coords"][:, 5] += 0.1                     # a labelled shoulder off: it costs
    assert float(loss(out, target, weight, vis)[0]) > float(base) + 1e-3


def test_convert_refuses_skeletons_without_a_torso_in_common():
    other = Skeleton("face", COCO17.joints[:5] + COCO17.joints[5:7] + COCO17.joints[11:13], (), (), (), (5, 8),
                     (6, 7), (0.1,) * 9)
    convert(np.zeros((1, 9, 3)), other, COCO17)    # shoulders and hips shared: fine
    bare = Skeleton("bare", ("nose", "left_eye", "right_eye", "a", "b"), (), (), (), (3, 4), (3, 4), (0.1,) * 5)
    with pytest.raises(PoserError, match="share too little"):
        convert(np.zeros((1, 5, 3)), bare, COCO17)


def test_distill_kl_is_zero_at_the_teacher_and_skips_joints_it_does_not_know():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    soft = torch.softmax(logits.flatten(2), -1).view(2, 3, 8, 8).clone()
    soft[:, 2] = 0                                 # a joint the teacher does not know
    ones = torch.ones(2, 3)
    assert float(distill_kl(logits, soft, ones)) == pytest.approx(0.0, abs=1e-5)
    wrong = logits.clone()
    wrong[:, 2] = torch.randn(2, 8, 8) * 5         # the unknown joint: anything goes
    assert float(distill_kl(wrong, soft, ones)) == pytest.approx(0.0, abs=1e-5)
    wrong[:, 0] = torch.randn(2, 8, 8) * 5
    full = float(distill_kl(wrong, soft, ones))
    assert full > 0.05
    half = ones.clone()
    half[:, 0] = 0.5                               # --distill-labelled 0.5 on that joint
    assert float(distill_kl(wrong, soft, half)) == pytest.approx(full / 2, rel=1e-5)
    # a finer teacher grid (64 vs 48 cells) is resampled to the model's
    big = torch.softmax(torch.randn(2, 3, 16, 16).flatten(2), -1).view(2, 3, 16, 16)
    assert torch.isfinite(distill_kl(logits, big, ones))


def test_teacher_channels_are_blazepose_own_joints_only():
    assert teacher_channels(COCO17.joints) == [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]
    ch = dict(zip(LSP14.joints, teacher_channels(LSP14.joints), strict=True))
    assert ch["neck"] == ch["head_top"] == -1 and ch["left_wrist"] == 15 and ch["right_ankle"] == 28
    # --distill-skip: those joints learn from their labels alone; the rest keep their channels
    skip = dict(zip(LSP14.joints, teacher_channels(LSP14.joints, ("left_hip", "right_hip")), strict=True))
    assert skip["left_hip"] == skip["right_hip"] == -1 and {k: v for k, v in skip.items() if "hip" not in k} == \
        {k: v for k, v in ch.items() if "hip" not in k}
    with pytest.raises(PoserError, match="nose not among the model's joints"):
        teacher_channels(LSP14.joints, ("nose",))


def test_init_maps_the_head_by_joint_name(tmp_path):
    """An LSP-14 weights file starts a COCO-17 model: every shared joint's head rows are the
    file's, the face joints keep their own start, the backbone is the file's."""
    from poser.models.weights import save_model
    from poser.spec import ModelSpec, StageSpec

    src = create_model("mobilenet_v3_small", LSP14.num_joints, None, sigma=False, head="integral")
    spec = StageSpec(backbone="mobilenet_v3_small", skeleton="lsp14", joints=LSP14.joints, input_size=64,
                     head="integral", sigma_head=False)
    save_model(tmp_path / "lsp.safetensors", [src.state_dict()], ModelSpec((spec,)))
    torch.manual_seed(1)
    model = create_model("mobilenet_v3_small", COCO17.num_joints, None, sigma=False, head="integral")
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    init_from(model, TrainConfig(backbone="mobilenet_v3_small", head="integral",
                                 init=str(tmp_path / "lsp.safetensors")), COCO17)
    got, want = model.state_dict(), src.state_dict()
    for name in ("head.logits.weight", "head.logits.bias", "head.visible.weight"):
        for k, joint in enumerate(COCO17.joints):
            expect = want[name][LSP14.index(joint)] if joint in LSP14.joints else fresh[name][k]
            if name == "head.visible.weight" and joint not in LSP14.joints:   # the face: the head top's
                expect = want[name][LSP14.index("head_top")]
            assert torch.equal(got[name][k], expect), (name, joint)
    assert all(torch.equal(got[k], v) for k, v in want.items() if not k.startswith("head."))


def test_a_model_trains_and_evaluates_on_data_with_other_joints(synth_root, tmp_path):
    """COCO-17 data, an LSP-14 model: it trains (neck and head top learn nothing from the data),
    its file says lsp14, and eval scores it on the joints both have."""
    res = runner.invoke(app, ["train", "--data", str(synth_root), "--skeleton", "lsp14", "--backbone",
                              "mobilenet_v3_small", "--input-size", "64", "--epochs", "1", "--batch-size", "8",
                              "--steps-per-epoch", "2", "--workers", "0", "--out", str(tmp_path), "--name", "x"])
    assert res.exit_code == 0, res.output
    weights = tmp_path / "x" / "last.safetensors"
    assert read_spec(weights).skeleton == "lsp14" and load_model(weights)[0].num_joints == 14
    res = runner.invoke(app, ["eval", "--data", str(synth_root), "--weights", str(weights), "--out",
                              str(tmp_path / "ev"), "--json", str(tmp_path / "ev.json")])
    assert res.exit_code == 0, res.output
    import json

    report = json.loads((tmp_path / "ev.json").read_text())
    assert "neck, head_top are not scored" in " ".join(res.output.split())
    assert report["pcp"]["limbs_counted"] > 0 and report["pcp"]["per_kind"]["head"] is None


def test_body19_answers_both_formats_and_exports_either(tmp_path):
    """A body19 model is COCO-17 plus LSP's neck and head top: scored as either skeleton, and
    `poser export --skeleton` keeps one skeleton's joints whose outputs are the model's own."""
    from poser.models.weights import read_meta, save_model
    from poser.spec import ModelSpec, StageSpec

    assert BODY19.joints[:17] == COCO17.joints and set(LSP14.joints) <= set(BODY19.joints)
    assert {BODY19.joints[a] for a, b in BODY19.flip_pairs} == {n for n in BODY19.joints if n.startswith("left_")}
    assert [lb.kind for lb in BODY19.pcp_limbs] == [lb.kind for lb in LSP14.pcp_limbs]
    torch.manual_seed(0)
    model = create_model("mobilenet_v3_small", BODY19.num_joints, None, sigma=False, head="integral").eval()
    with torch.no_grad():                      # heads start near flat: make the rows differ per joint
        model.head.logits.weight.normal_(0, 0.3)
        model.head.logits.bias.normal_(0, 1.0)
    spec = StageSpec(backbone="mobilenet_v3_small", skeleton="body19", joints=BODY19.joints, input_size=64,
                     head="integral", sigma_head=False)
    src = tmp_path / "body19.safetensors"
    save_model(src, [model.state_dict()], ModelSpec((spec,)))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        full = model(x)
    for sk in (LSP14, COCO17):
        dst = tmp_path / f"{sk.name}.safetensors"
        res = runner.invoke(app, ["export", str(src), str(dst), "--storage", "fp32", "--skeleton", sk.name])
        assert res.exit_code == 0, res.output
        kept = load_model(dst)[0].eval()
        assert read_spec(dst).skeleton == sk.name and kept.num_joints == sk.num_joints
        assert read_meta(dst)["trained_on"]["joints_of"] == "body19"
        rows = [BODY19.index(n) for n in sk.joints]
        with torch.no_grad():
            out = kept(x)
        for key in ("coords", "visible", "heatmap"):
            assert torch.allclose(out[key], full[key][:, rows], atol=1e-5), (sk.name, key)
        if sk is LSP14:                                 # picked by name, not the first 14 rows
            assert not torch.allclose(out["heatmap"], full["heatmap"][:, :sk.num_joints])
    res = runner.invoke(app, ["export", str(tmp_path / "lsp14.safetensors"), str(tmp_path / "x.safetensors"),
                              "--skeleton", "coco17"])
    assert res.exit_code == 1 and "lacks nose" in " ".join(res.output.split()), res.output
    assert not (tmp_path / "x.safetensors").exists()


def test_unknown_skeleton_or_teacher_is_one_line(synth_root, tmp_path):
    base = ["train", "--data", str(synth_root), "--epochs", "1", "--out", str(tmp_path)]
    for args, msg in ((["--skeleton", "mpii"], "unknown skeleton"), (["--distill", "resnet"], "unknown teacher"),
                      (["--distill", "blazepose_full", "--head", "fc"], "takes --head integral"),
                      (["--distill-skip", "left_hip"], "give --distill too"),
                      (["--distill", "blazepose_full", "--distill-skip", "left_hips"],
                       "no skeleton has the joints left_hips")):
        res = runner.invoke(app, [*base, *args])
        assert res.exit_code == 1 and msg in " ".join(res.output.split()), res.output


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tflite") is None, reason="the tflite package is absent")
def test_the_teacher_finds_the_nose_of_real_people(coco_sample):
    """BlazePose full as teacher, on the COCO sample's people (their boxes as crops): its nose
    heatmap peaks near the labelled nose; joints it does not know get no target."""
    import json

    import cv2

    from poser import geometry as g
    from poser.codec import MEAN, STD
    from poser.models import blazepose as bp
    from poser.train.distill import Teacher

    try:
        teacher = Teacher("blazepose_full", LSP14.joints[:12] + ("neck",) + COCO17.joints[:1])
    except PoserError as e:
        pytest.skip(str(e))
    coco = json.loads((coco_sample / "person_keypoints_sample.json").read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    errs = []
    for a in coco["annotations"]:
        kp = np.array(a["keypoints"], float).reshape(17, 3)
        if kp[0, 2] == 0:
            continue
        img = cv2.cvtColor(cv2.imread(str(next(coco_sample.rglob(files[a["image_id"]])))), cv2.COLOR_BGR2RGB)
        x, y, w, h = a["bbox"]
        side = max(w, h) * 1.25
        m = g.crop_matrix(np.array([x + w / 2, y + h / 2]), side, 256)
        crop = cv2.warpAffine(img, m, (256, 256))
        t = torch.tensor((crop / 255.0 - MEAN) / STD, dtype=torch.float32).permute(2, 0, 1)[None]
        soft = teacher(t)[0]
        assert float(soft[12].sum()) == 0 and float(soft[13].sum()) == pytest.approx(1.0, abs=1e-4)
        cell = int(soft[13].flatten().argmax())
        peak = np.array([cell % 64 + 0.5, cell // 64 + 0.5]) * 4
        errs.append(np.linalg.norm(peak - g.transform_points(m, kp[:1, :2])[0]) / 256)
    assert errs and np.median(errs) < 0.05, errs
    assert bp.CHANNELS["nose"] == (0,)
