"""poser annotate on synthetic images and a synthetic video the tests make; bad inputs."""

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from poser.annotate.inputs import collect
from poser.cli import app
from poser.skeletons import COCO17
from poser.synth.clips import write_video
from poser.synth.dataset import one_person
from poser.video.tracking import OneEuro

runner = CliRunner()


def _errors(persons: dict, kp: np.ndarray) -> np.ndarray:
    pred = np.array([persons["keypoints"][j][:2] for j in COCO17.joints])
    lab = kp[:, 2] > 0
    return np.linalg.norm(pred[lab] - kp[lab, :2], axis=-1)


def _height(kp: np.ndarray) -> float:
    lab = kp[:, 2] > 0
    return float(np.ptp(kp[lab, 1]))


def test_annotate_image_and_video_with_a_trained_model(trained_run, tmp_path):
    weights = str(trained_run / "best.safetensors")
    img, kp, bbox = one_person(seed=11)
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "person.png"), img)
    # A 640 x 360 video: the figure walks to the right, 3 px per frame, on a grey frame.
    frames = 24
    truth = write_video(tmp_path / "in" / "walk.mp4", frames, (640, 360), 12.0, seed=11, step=3)
    out = tmp_path / "out"
    boxes = [{"file_name": "person.png", "bbox": bbox, "score": 0.9}]
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    res = runner.invoke(app, ["annotate", str(tmp_path / "in"), "--weights", weights, "--out", str(out),
                              "--boxes", str(tmp_path / "boxes.json"), "--device", "cpu", "--smooth"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "keypoints.json").read_text())
    assert doc["skeleton"]["joints"] == list(COCO17.joints) and doc["failed"] == []
    image = [r for r in doc["items"] if r["type"] == "image"]
    video = [r for r in doc["items"] if r["type"] == "video"]
    assert len(image) == 1 and len(video) == frames
    assert [r["frame"] for r in video] == list(range(frames)) and video[0]["fps"] == pytest.approx(12.0)
    # The image: the detection box was used, and the keypoints land near the figure's joints.
    person = image[0]["persons"][0]
    assert person["box"] == pytest.approx(bbox, abs=0.01)
    err = _errors(person, kp)
    assert np.median(err) < 0.2 * _height(kp), (err, _height(kp))
    # The video: one person per frame, keypoints inside the frame and near the true joints,
    # with the box following the figure (no --boxes entry for the video: whole frame first).
    med = []
    for r, t in zip(video, truth, strict=True):
        (p,) = r["persons"]
        xy = np.array([v[:2] for v in p["keypoints"].values()])
        assert (xy >= -1).all() and (xy[:, 0] <= 641).all() and (xy[:, 1] <= 361).all()
        med.append(np.median(_errors(p, t)))
    assert np.median(med[3:]) < 0.25 * _height(truth[0]), med
    assert video[-1]["persons"][0]["box"][2] < 640           # tracked: no longer the whole frame
    cap = cv2.VideoCapture(str(out / "in" / "walk.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == frames and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    drawn = cv2.imread(str(out / "in" / "person.png"))
    assert drawn.shape == img.shape and np.abs(drawn.astype(int) - img).sum() > 0   # something was drawn
    # Without --boxes the person search finds the figure in the image: its box is no longer the
    # whole image, and the keypoints are about as good as with the true box.
    res = runner.invoke(app, ["annotate", str(tmp_path / "in" / "person.png"), "--weights", weights, "--out",
                              str(tmp_path / "nobox"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    person = json.loads((tmp_path / "nobox" / "keypoints.json").read_text())["items"][0]["persons"][0]
    assert person["box"][2] < img.shape[1] - 1 or person["box"][3] < img.shape[0] - 1
    assert np.median(_errors(person, kp)) < 0.2 * _height(kp)


def test_bad_inputs_are_reported_and_the_rest_is_processed(trained_run, tmp_path):
    weights = str(trained_run / "best.safetensors")
    good, _, _ = one_person(seed=12)
    cv2.imwrite(str(tmp_path / "good.jpg"), good)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    vw = cv2.VideoWriter(str(tmp_path / "empty.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    vw.release()
    (tmp_path / "nothing").mkdir()
    out = tmp_path / "out"
    res = runner.invoke(app, ["annotate", str(tmp_path / "good.jpg"), str(tmp_path / "broken.jpg"),
                              str(tmp_path / "broken.mp4"), str(tmp_path / "empty.avi"), str(tmp_path / "nothing"),
                              str(tmp_path / "missing.png"), "--weights", weights, "--out", str(out)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    doc = json.loads((out / "keypoints.json").read_text())
    failed = {f["source"].split("/")[-1]: f["error"] for f in doc["failed"]}
    assert failed == {"broken.jpg": "not a readable image", "broken.mp4": "not a readable video",
                      "empty.avi": failed.get("empty.avi"), "nothing": "folder has no images or videos",
                      "missing.png": "no such file or folder"}
    assert failed["empty.avi"] in ("not a readable video", "video has no frames")
    assert [r["source"].split("/")[-1] for r in doc["items"]] == ["good.jpg"]
    assert sorted(p.name for p in out.iterdir()) == ["good.jpg", "keypoints.json"]   # nothing half-written
    for line in ("broken.jpg: not a readable image", "nothing: folder has no images or videos"):
        assert line in res.output


def test_inputs_are_collected_recursively_sorted_and_named_uniquely(tmp_path):
    for p in ("a/2.jpg", "a/sub/1.png", "a/notes.txt", "b/2.jpg", "clip.MP4"):
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).write_bytes(b"x")
    sources, failed = collect([str(tmp_path / "a"), str(tmp_path / "b" / "2.jpg"), str(tmp_path / "clip.MP4")])
    assert [(s.kind, str(s.rel)) for s in sources] == [("image", "a/2.jpg"), ("image", "a/sub/1.png"),
                                                       ("image", "2.jpg"), ("video", "clip.mp4")]
    assert failed == []


def test_one_euro_filter_smooths_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    f = OneEuro(min_cutoff=1.0, beta=0.02)
    still = [f(np.array([100.0, 50.0]) + rng.normal(0, 2, 2), 1 / 30) for _ in range(60)]
    assert np.std(np.array(still)[10:], axis=0).max() < 1.0            # raw jitter is 2 px
    for _ in range(30):                                                 # then a jump of 200 px
        y = f(np.array([300.0, 50.0]), 1 / 30)
    assert abs(y[0] - 300) < 2.0
