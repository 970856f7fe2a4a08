"""The Python API: README's example runs as written; Poses serves JSON, COCO and drawing."""

import re

import cv2
import numpy as np
import pytest

import poser
from poser.errors import PoserError
from poser.synth.dataset import one_person
from tests.conftest import REPO


def _readme_example() -> str:
    text = (REPO / "README.md").read_text()
    return re.search(r"<!-- api:example -->\s*```python\n(.*?)```", text, re.S).group(1)


def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    img, kp, _ = one_person(seed=2)
    cv2.imwrite(str(tmp_path / "photo.jpg"), img)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(_readme_example(), scope)                       # noqa: S102 - our own README
    poses = scope["poses"]
    assert isinstance(poses, poser.Poses) and len(poses) == 1
    assert poses.keypoints.shape == (1, 14, 2) and "(1, 14, 2) (1, 14)" in capsys.readouterr().out
    assert ((poses.scores >= 0) & (poses.scores <= 1)).all()


def test_bgr_and_rgb_arrays_and_paths_give_the_same_poses(tmp_path):
    img, kp, box = one_person(seed=5)
    cv2.imwrite(str(tmp_path / "p.png"), img)
    model = poser.load(device="cpu")
    a = model(img, boxes=[box])
    b = model(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), boxes=[box], rgb=True)
    c = model(tmp_path / "p.png", boxes=[box])
    assert np.allclose(a.keypoints, b.keypoints) and np.allclose(a.keypoints, c.keypoints)
    assert a.boxes.tolist() == [list(map(float, box))]
    wrong = model(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), boxes=[box])      # RGB passed as BGR: differs
    assert not np.allclose(a.keypoints, wrong.keypoints)
    with pytest.raises(PoserError, match="uint8"):
        model(np.zeros((10, 10)))


def test_poses_records_coco_and_drawing_agree():
    sk = poser.load(device="cpu").skeleton
    kp = np.array([[[10.0 + j, 20.0 + 2 * j] for j in range(14)]] * 2)
    poses = poser.Poses(kp, np.full((2, 14), 0.5), np.full((2, 14), 0.9), np.array([[0, 0, 40, 60.0]] * 2),
                        np.array([0.8, 0.4]), sk, track_ids=np.array([3, 7]))
    rec = poses.to_json(min_score=0.2)
    assert [r["track_id"] for r in rec] == [3, 7] and rec[0]["keypoints"][sk.joints[2]] == [12.0, 24.0, 0.5]
    coco = poses.to_coco(9)
    assert [c["score"] for c in coco] == pytest.approx([0.4, 0.2]) and coco[1]["image_id"] == 9
    assert len(coco[0]["keypoints"]) == 3 * 14
    assert len(poses[1:]) == 1 and poses[1:].track_ids.tolist() == [7]
    canvas = poses.draw(np.zeros((80, 80, 3), np.uint8))
    assert canvas.any()


def test_visible_means_in_python_what_it_means_in_the_json():
    """One meaning: in the crop with probability >= 0.5 and scored >= the min score, a bool."""
    from poser.inference.poses import Poses
    from poser.skeletons import get_skeleton

    sk = get_skeleton("lsp14")
    in_crop = np.array([[0.9, 0.9, 0.3] + [0.9] * 11])
    scores = np.array([[0.8, 0.1, 0.8] + [0.5] * 11])
    p = Poses(np.zeros((1, 14, 2)), scores, in_crop, np.array([[0, 0, 10, 10.0]]), np.ones(1), sk)
    assert p.visible.dtype == bool and p.visible[0, :3].tolist() == [True, False, False]
    rec = p.to_json()[0]["visible"]
    assert [rec[j] for j in sk.joints] == p.visible[0].tolist()
    assert p.visible_at(0.6)[0, 3] == False and p.to_json(0.6)[0]["visible"][sk.joints[3]] is False  # noqa: E712
