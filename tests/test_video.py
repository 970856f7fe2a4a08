"""poser/video.py: the tracker and its association, the threaded reader and writer."""

import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from poser.cli import app
from poser.inference.predictor import Predictor
from poser.models.deeppose import create_model
from poser.models.weights import save_weights
from poser.skeletons import COCO17
from poser.synth.clips import write_video
from poser.video.tracking import MAX_MISSES, Tracker, associate, iou

runner = CliRunner()


def test_association_is_by_overlap_best_first():
    tracks = np.array([[0, 0, 10, 10], [100, 0, 10, 10], [200, 0, 10, 10.0]])
    dets = np.array([[101, 1, 10, 10], [1, 0, 10, 10], [400, 0, 10, 10.0]])
    assert sorted(associate(tracks, dets)) == [(0, 1), (1, 0)]         # the third of each: no overlap
    assert iou(tracks[:1], tracks[:1])[0, 0] == pytest.approx(1.0)
    # One detection overlapping two tracks goes to the better overlap only.
    assert associate(np.array([[0, 0, 10, 10], [4, 0, 10, 10.0]]), np.array([[5, 0, 10, 10.0]])) == [(1, 0)]


def _pose_in(box: np.ndarray, k: int = 17) -> np.ndarray:
    """A pose filling a box (K, 2) that the tracker finds plausible."""
    t = np.linspace(0.1, 0.9, k)
    return np.stack([box[0] + box[2] * t, box[1] + box[3] * t[::-1]], -1)


def test_tracker_keeps_ids_through_detection_rounds_starts_new_people_and_ends_lost_ones():
    tr = Tracker(max_people=3, every=5)
    a, b = np.array([10, 10, 50, 100.0]), np.array([200, 10, 50, 100.0])
    assert tr.wants_detection(0)
    tr.detect(np.stack([a, b]), np.array([0.9, 0.8]))
    assert [t.id for t in tr.tracks] == [0, 1]
    scores = np.ones((2, 17))
    for f in range(1, 5):       # both walk right 5 px a frame, their boxes follow their poses
        assert not tr.wants_detection(f)
        boxes = tr.boxes()
        tr.update(np.stack([_pose_in(x + [5, 0, 0, 0]) for x in boxes]), scores, (640, 480), 0.2, 0.04)
    assert tr.wants_detection(5)
    moved = tr.boxes()
    # The detector lists them the other way round, plus a newcomer: ids follow overlap, not order.
    tr.detect(np.stack([moved[1], moved[0], [400, 10, 50, 100.0]]), np.array([0.8, 0.9, 0.7]))
    assert [t.id for t in tr.tracks] == [0, 1, 2]
    assert np.allclose(tr.tracks[0].box, moved[0]) and np.allclose(tr.tracks[1].box, moved[1])
    tr.detect(np.array([[500, 300, 40, 80.0]]), np.array([0.9]))       # full: max_people
    assert len(tr.tracks) == 3
    # Track 1's pose collapses: it is lost, a detection runs on the next frame, and after
    # MAX_MISSES frames without a plausible pose it ends.
    for f in range(MAX_MISSES + 1):
        boxes = tr.boxes()
        poses = np.stack([_pose_in(x) for x in boxes])
        poses[1] = boxes[1][:2]
        tr.update(poses, np.ones((len(boxes), 17)), (640, 480), 0.2, 0.04)
        if f == 0:
            assert tr.wants_detection(6)
    assert [t.id for t in tr.tracks] == [0, 2]


def test_tracker_ends_a_duplicate_of_the_same_person():
    tr = Tracker(max_people=5, every=10)
    a = np.array([10, 10, 50, 100.0])
    tr.detect(np.stack([a, a + [30, 0, 0, 0]]), np.array([0.9, 0.9]))   # IoU < MATCH_IOU: two tracks
    tr.update(np.stack([_pose_in(a), _pose_in(a) + 1]), np.ones((2, 17)), (640, 480), 0.2, 0.04)
    assert [t.id for t in tr.tracks] == [0]


def test_a_failing_model_ends_a_video_run_with_one_line_instead_of_hanging(tmp_path, monkeypatch):
    weights = tmp_path / "tiny.safetensors"
    save_weights(weights, create_model("mobilenet_v3_small", 17, head="integral").state_dict(),
                 {"skeleton": "coco17", "joints": list(COCO17.joints), "backbone": "mobilenet_v3_small",
                  "input_size": 64, "head": "integral", "sigma_head": False})
    # Long enough that the decoder fills its queue and blocks while the model thread fails.
    write_video(tmp_path / "long.mp4", 150, (160, 120), 25.0, seed=2, step=0, side=100, origin=(30, 10))
    write_video(tmp_path / "short.mp4", 5, (160, 120), 25.0, seed=2, step=1, side=100, origin=(30, 10))
    real, calls = Predictor.predict_image, {"n": 0}

    def flaky(self, image, boxes, flip=False):
        calls["n"] += 1
        if calls["n"] == 4:
            time.sleep(0.5)                     # the decoder's queue is full by now
            raise RuntimeError("boom")
        return real(self, image, boxes, flip)

    monkeypatch.setattr(Predictor, "predict_image", flaky)
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(res=runner.invoke(
        app, ["annotate", str(tmp_path / "long.mp4"), str(tmp_path / "short.mp4"), "--weights", str(weights),
              "--out", str(tmp_path / "o"), "--search", "0"])), daemon=True)
    t.start()
    t.join(60)
    assert not t.is_alive(), "annotate hung after the model failed"
    res = out["res"]
    assert res.exit_code == 1 and "RuntimeError: boom" in res.output and "Traceback" not in res.output
    assert not list((tmp_path / "o").glob(".*partial*"))              # nothing half-written stays
    assert (tmp_path / "o" / "short.mp4").is_file()                      # the other video still ran
