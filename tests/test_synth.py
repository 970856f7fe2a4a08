import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from poser.data.coco import read_coco
from poser.errors import PoserError
from poser.skeletons import COCO17
from poser.synth import dataset as synth
from poser.synth.dataset import SynthConfig, generate
from poser.synth.figure import OCCLUDER, PARTS_PER_FIGURE, Canvas, P, annotation

J = {n: i for i, n in enumerate(COCO17.joints)}


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_dataset_and_train_is_a_prefix(tmp_path):
    generate(tmp_path / "a", SynthConfig(images=12, seed=3))
    generate(tmp_path / "b", SynthConfig(images=12, seed=3), workers=2)
    generate(tmp_path / "c", SynthConfig(images=12, seed=4))
    generate(tmp_path / "d", SynthConfig(images=24, seed=3))
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b                                   # worker count does not matter
    assert a.keys() == c.keys() and a != c
    for name in (tmp_path / "a" / "train").iterdir():
        assert name.read_bytes() == (tmp_path / "d" / "train" / name.name).read_bytes()


def test_dataset_is_valid_coco_with_consistent_flags(synth_root):
    for split, n_img in (("train", 32), ("val", 8)):
        ann_file = synth_root / "annotations" / f"person_keypoints_{split}.json"
        coco = COCO(str(ann_file))
        assert len(coco.imgs) == n_img and len(coco.anns) >= n_img
        flags = []
        for ann in coco.anns.values():
            img = coco.imgs[ann["image_id"]]
            assert (synth_root / split / img["file_name"]).is_file()
            k = np.array(ann["keypoints"]).reshape(17, 3)
            assert ann["num_keypoints"] == (k[:, 2] > 0).sum()
            lab = k[:, 2] > 0
            assert (k[lab, 0] >= 0).all() and (k[lab, 0] < img["width"]).all()
            assert (k[lab, 1] >= 0).all() and (k[lab, 1] < img["height"]).all()
            assert (k[~lab, :2] == 0).all()
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
            assert ann["area"] <= w * h
            flags += list(k[:, 2])
        if split == "train":
            flags = np.array(flags)
            assert 0.6 < (flags == 2).mean() < 0.97      # mostly visible,
            assert (flags == 1).mean() > 0.02            # some occluded,
        inst = read_coco(ann_file, synth_root / split)
        assert len(inst) > 0 and inst.path(0).is_file()


def test_visibility_follows_what_is_drawn_on_top():
    cv = Canvas(np.zeros((100, 100, 3), np.uint8))
    base = 1                                            # figure 0
    pts = np.full((17, 2), 50.0)
    pts[J["left_shoulder"]], pts[J["left_elbow"]], pts[J["left_wrist"]] = (20, 20), (40, 20), (60, 20)
    pts[J["left_hip"]], pts[J["right_ankle"]] = (20, 70), (150, 50)
    cv.line(pts[J["left_shoulder"]], pts[J["left_elbow"]], 5, (255, 0, 0), base + P["left_upper_arm"])
    cv.line(pts[J["left_elbow"]], pts[J["left_wrist"]], 5, (255, 0, 0), base + P["left_lower_arm"])
    cv.line(pts[J["left_hip"]], (20, 90), 7, (0, 0, 255), base + P["left_thigh"])
    cv.circle(pts[J["left_wrist"]], 4, (0, 255, 0), OCCLUDER)                       # covers the wrist
    cv.line((10, 70), (30, 70), 5, (9, 9, 9), base + P["right_lower_arm"])           # own arm over the hip
    cv.circle(pts[J["nose"]], 6, (200, 200, 200), base + P["head"])
    occl = np.zeros(17, bool)
    occl[J["left_eye"]] = True                                                      # hidden by the view
    ann = annotation(cv.owner, pts, occl, 0, 100, 100)
    v = np.array(ann["keypoints"]).reshape(17, 3)[:, 2]
    assert v[J["left_shoulder"]] == 2 and v[J["left_elbow"]] == 2 and v[J["nose"]] == 2
    assert v[J["left_wrist"]] == 1 and v[J["left_hip"]] == 1 and v[J["left_eye"]] == 1
    assert v[J["right_ankle"]] == 0 and ann["keypoints"][3 * J["right_ankle"]] == 0
    assert ann["bbox"][0] <= 10 and PARTS_PER_FIGURE > len(P)


def test_existing_output_and_failures_leave_nothing_half_written(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    generate(out, SynthConfig(images=4))
    with pytest.raises(PoserError, match="already exists"):
        generate(out, SynthConfig(images=4))
    before = _files(out)
    calls = {"n": 0}
    real = synth.render_image

    def flaky(cfg, n):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real(cfg, n)

    monkeypatch.setattr(synth, "render_image", flaky)
    with pytest.raises(RuntimeError):
        generate(out, SynthConfig(images=6, seed=9), overwrite=True)
    assert _files(out) == before                        # the old dataset is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temporary folders left
    monkeypatch.setattr(synth, "render_image", real)
    generate(out, SynthConfig(images=6, seed=9), overwrite=True)
    assert len(json.loads((out / "annotations" / "person_keypoints_train.json").read_text())["images"]) == 5


def test_walking_clip_moves_its_limbs_and_keeps_the_body_whole(tmp_path):
    from poser.synth.walk import write_walk_video

    frames, size, period = 40, (320, 180), 20
    truth = write_walk_video(tmp_path / "walk.mp4", frames, size, 25.0, seed=3, period=period)
    assert truth.shape == (frames, 17, 3)
    cap, read = cv2.VideoCapture(str(tmp_path / "walk.mp4")), []
    while (got := cap.read())[0]:
        read.append(got[1])
    assert len(read) == frames and read[0].shape == (size[1], size[0], 3)
    assert np.abs(read[0].astype(int) - read[-1]).mean() > 1     # the picture changes
    assert (truth[:, :, 2] > 0).all()                          # the whole body in frame
    assert ((truth[:, :, 2] == 2).sum(1) >= 14).all()          # most joints on top (legs cross)
    xy = truth[:, :, :2]
    pelvis = (xy[:, J["left_hip"]] + xy[:, J["right_hip"]]) / 2
    assert (np.diff(pelvis[:, 0]) > 0).all()                   # walks left to right
    # Rigid bones: every frame's thigh, shin and forearm keep their length.
    for a, b in (("left_hip", "left_knee"), ("right_knee", "right_ankle"), ("left_elbow", "left_wrist")):
        bone = np.linalg.norm(xy[:, J[a]] - xy[:, J[b]], axis=1)
        assert bone.std() < 0.02 * bone.mean()
    # The legs swing in opposition: which ankle leads flips twice a stride.
    lead = np.sign(xy[:, J["left_ankle"], 0] - xy[:, J["right_ankle"], 0])
    assert (np.diff(lead[:period]) != 0).sum() == 2
    # Upright: the head above the shoulders above the hips above the ankles, every frame.
    for upper, lower in (("nose", "left_shoulder"), ("left_shoulder", "left_hip"), ("left_hip", "left_ankle")):
        assert (xy[:, J[upper], 1] < xy[:, J[lower], 1]).all()


def test_video_accuracy_scores_records_against_the_clips_truth(tmp_path):
    from poser.synth.demo import video_accuracy
    from poser.synth.walk import write_walk_video

    truth = write_walk_video(tmp_path / "walk.mp4", 10, (320, 180), 25.0, seed=1)
    src = str(tmp_path / "walk.mp4")

    def record(frame: int, xy: np.ndarray, score: float) -> dict:
        kp = {j: [float(x), float(y), score] for j, (x, y) in zip(COCO17.joints, xy, strict=True)}
        return {"source": src, "type": "video", "frame": frame, "persons": [{"keypoints": kp}]}

    records = [record(f, truth[f, :, :2] + 1.0, 0.9) for f in range(2, 10)]      # right, 1 px off
    records.append(record(0, truth[0, :, :2] + 100.0, 0.1))                     # wrong, under min score
    records.append({"source": src, "type": "video", "frame": 1, "persons": []})  # nobody found
    records.append(record(0, truth[0, :, :2], 0.9) | {"source": "other.mp4"})   # another input
    got = video_accuracy(records, src, truth, min_score=0.2)
    assert got == {"pdj_0.2": 0.8, "joints_drawn": 17 * 8 / 10, "fewest_drawn": 0}
