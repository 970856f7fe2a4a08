"""Person detectors (random weights: the plumbing, not accuracy), tracking several people
through a video, and --save-boxes runs that repeat exactly."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from poser import geometry as g
from poser.cli import app
from poser.detect import detectors as detect
from poser.detect.boxes import Detections, select
from poser.errors import PoserError
from poser.synth.clips import write_crossing_video, write_video
from poser.synth.dataset import one_person

runner = CliRunner()


def _random_detector(name: str, path: Path) -> None:
    """Detector `name` with random weights, its person logit raised so that it finds
    'people' (random boxes) in any image; saved as safetensors."""
    torch.manual_seed(0)
    model = detect.build_detector(name)
    if hasattr(model, "roi_heads"):
        model.roi_heads.box_predictor.cls_score.bias.data[1] += 8.0
    else:       # SSD: one conv per feature level, anchors x classes channels
        for level in model.head.classification_head.module_list:
            conv = [m for m in level.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            conv.bias.data.view(-1, 91)[:, 1] += 8.0
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def _boxes_of(persons: list[dict]) -> list[list[float]]:
    return [p["box"] for p in persons]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if "resnet50" in n else n
                                  for n in detect.DETECTORS])
def test_every_detector_runs_through_annotate_and_eval(name, tmp_path, trained_run, synth_root):
    weights = tmp_path / "det.safetensors"
    _random_detector(name, weights)
    img, _, _ = one_person(seed=3)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    det = ["--detector", name, "--detector-weights", str(weights), "--person-threshold", "0.3"]
    res = runner.invoke(app, ["annotate", str(tmp_path / "a.png"), *det, "--max-people", "3", "--weights",
                              str(trained_run / "best.safetensors"), "--out", str(tmp_path / "ann"),
                              "--save-boxes", str(tmp_path / "boxes.json")])
    assert res.exit_code == 0, res.output
    persons = json.loads((tmp_path / "ann" / "keypoints.json").read_text())["items"][0]["persons"]
    saved = json.loads((tmp_path / "boxes.json").read_text())
    assert 1 <= len(persons) <= 3 and len(saved) == len(persons)
    assert all(d["file_name"] == "a.png" and d["score"] >= 0.3 and d["category_id"] == 1 for d in saved)
    assert _boxes_of(persons) == [[round(v, 2) for v in d["bbox"]] for d in saved]
    assert (tmp_path / "ann" / "a.png").is_file()
    # eval: COCO AP with the detector's boxes, and what it found saved beside the metrics
    res = runner.invoke(app, ["eval", "--data", str(synth_root), "--weights", str(trained_run / "best.safetensors"),
                              *det, "--limit", "2", "--out", str(tmp_path / "ev"), "--name", "r",
                              "--json", str(tmp_path / "ev.json")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "ev.json").read_text())
    assert report["detected_boxes_from"] == f"detector {name}"
    assert 0.0 <= report["coco_detected_boxes"]["AP"] <= 1.0
    found = json.loads((tmp_path / "ev" / "r" / "detections.json").read_text())
    assert found and all("image_id" in d and d["score"] >= 0.3 for d in found)


def test_detector_weights_from_torch_cache_and_one_line_offline(tmp_path, monkeypatch, trained_run):
    name = "ssdlite320_mobilenet_v3_large"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    real = detect.weights_url(name)
    # Nothing listens on port 9 here: a fetch fails at once, as offline.
    monkeypatch.setattr(detect, "weights_url", lambda n: "http://127.0.0.1:9/" + Path(real).name)
    img, _, _ = one_person(seed=4)
    cv2.imwrite(str(tmp_path / "b.png"), img)
    args = ["annotate", str(tmp_path / "b.png"), "--detector", name, "--weights",
            str(trained_run / "best.safetensors"), "--out", str(tmp_path / "o"), "--person-threshold", "0.3"]
    res = runner.invoke(app, args)
    assert res.exit_code != 0 and "Traceback" not in res.output
    msg = " ".join(res.output.split())
    assert "poser fetch-detector" in msg and "--detector-weights" in msg and "--boxes" in msg
    # The same file placed where torchvision's fetch would leave it: used, nothing fetched.
    cached = detect.cached_weights_path(name)
    assert cached.parent.parent.parent == tmp_path / "torch" and cached.name == Path(real).name
    cached.parent.mkdir(parents=True, exist_ok=True)
    _random_detector(name, tmp_path / "w.safetensors")
    from safetensors.torch import load_file

    torch.save(load_file(str(tmp_path / "w.safetensors")), cached)
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "keypoints.json").read_text())["items"][0]["persons"]


def test_unknown_detector_and_bad_weights_are_one_line(tmp_path):
    img, _, _ = one_person(seed=4)
    cv2.imwrite(str(tmp_path / "b.png"), img)
    res = runner.invoke(app, ["annotate", str(tmp_path / "b.png"), "--detector", "yolo", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "unknown detector 'yolo'" in res.output and "Traceback" not in res.output
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    res = runner.invoke(app, ["annotate", str(tmp_path / "b.png"), "--detector", "ssdlite320_mobilenet_v3_large",
                              "--detector-weights", str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "not a readable state dict" in res.output


def test_select_filters_files_and_detectors_alike():
    dets = [{"bbox": [0, 0, 10, 10], "score": 0.4}, {"bbox": [0, 0, 10, 10], "score": 0.9},
            {"bbox": [0, 0, 0, 10], "score": 0.95}, {"bbox": [0, 0, 5, 5], "score": 0.8, "category_id": 2},
            {"bbox": [1, 1, 5, 5], "score": 0.7}]
    boxes, scores = select(dets, 0.5, max_people=5)
    assert scores.tolist() == [0.9, 0.7] and boxes.shape == (2, 4)
    assert select(dets, 0.5, max_people=1)[1].tolist() == [0.9]
    d = Detections([{"file_name": "v.mp4", "frame": 3, "bbox": [0, 0, 4, 4], "score": 1.0},
                    {"file_name": "a/img.jpg", "bbox": [0, 0, 4, 4], "score": 1.0}])
    assert d.has_frames("v.mp4") and not d.has_frames("img.jpg")
    assert len(d.lookup("v.mp4", 3)[0]) == 1 and len(d.lookup("v.mp4", 0)[0]) == 0
    assert len(d.lookup("img.jpg")[0]) == 1


def _truth_boxes(kp: np.ndarray) -> list[float]:
    return g.keypoint_box(kp[None].astype(float), g.PERSON_BOX_MARGIN)[0].tolist()


@pytest.mark.xfail(strict=False, reason=(
    "a model limit, not the tracker's: the 90 s fixture model's pose slides onto the other figure "
    "while they cross, and the next detection round starts a third track (failed at 60c2196 too on "
    "2026-12-02, passed the day before; the box cap of video/tracking.py did not change it)"))
def test_two_people_crossing_keep_their_track_ids(trained_run, tmp_path):
    truth = write_crossing_video(tmp_path / "cross.mp4")         # (frames, 2, 17, 3)
    # A detector that is always right (the figures' true boxes), saved as a detector run is.
    dets = [{"file_name": "cross.mp4", "frame": f, "bbox": _truth_boxes(truth[f, p]), "score": 0.9 - 0.1 * p}
            for f in range(len(truth)) for p in range(2)]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    res = runner.invoke(app, ["annotate", str(tmp_path / "cross.mp4"), "--boxes", str(tmp_path / "dets.json"),
                              "--detect-every", "8", "--weights", str(trained_run / "best.safetensors"),
                              "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    items = json.loads((tmp_path / "out" / "keypoints.json").read_text())["items"]
    assert len(items) == len(truth) and (tmp_path / "out" / "cross.mp4").is_file()
    owner: dict[int, set[int]] = {}
    for f, item in enumerate(items):
        for person in item["persons"]:
            xy = np.array([v[:2] for v in person["keypoints"].values()])
            err = [np.median(np.linalg.norm(xy - truth[f, p, :, :2], axis=-1)) for p in range(2)]
            owner.setdefault(person["track_id"], set()).add(int(np.argmin(err)))
    assert sorted(owner) == [0, 1], owner                 # two tracks, no third after the crossing
    assert owner[0] != owner[1] and all(len(v) == 1 for v in owner.values()), owner   # nobody jumps


def test_save_boxes_repeats_a_video_run_exactly(trained_run, tmp_path):
    write_video(tmp_path / "walk.mp4", 12, (320, 240), 12.0, seed=5, step=4, side=160, origin=(20, 40))
    weights = tmp_path / "det.safetensors"
    _random_detector("ssdlite320_mobilenet_v3_large", weights)
    common = ["--weights", str(trained_run / "best.safetensors"), "--detect-every", "4", "--person-threshold",
              "0.3", "--max-people", "2", "--no-draw"]
    res = runner.invoke(app, ["annotate", str(tmp_path / "walk.mp4"), *common, "--detector",
                              "ssdlite320_mobilenet_v3_large", "--detector-weights", str(weights),
                              "--save-boxes", str(tmp_path / "saved.json"), "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "saved.json").read_text())
    assert saved and {d["frame"] for d in saved} >= {0} and all(d["file_name"] == "walk.mp4" for d in saved)
    res = runner.invoke(app, ["annotate", str(tmp_path / "walk.mp4"), *common, "--boxes", str(tmp_path / "saved.json"),
                              "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    first, again = ([it["persons"] for it in json.loads((tmp_path / d / "keypoints.json").read_text())["items"]]
                    for d in ("a", "b"))
    assert first == again and any(first)


def test_auto_detector_is_the_fastest_measured_on_the_device():
    from poser.detect.detectors import CPU_DETECTOR, DEFAULT_DETECTOR, DETECTORS, resolve_detector
    from poser.errors import PoserError

    assert resolve_detector("auto", "cpu") == CPU_DETECTOR == "ssdlite320_mobilenet_v3_large"
    assert resolve_detector("auto", "cuda") == DEFAULT_DETECTOR
    assert all(resolve_detector(n) == n for n in DETECTORS)
    with pytest.raises(PoserError, match="known: auto, "):
        resolve_detector("yolo")


def test_a_corrupt_cached_detector_file_is_named_not_missing(tmp_path, monkeypatch):
    """Issue 37, case 19: it said the weights were not in torch's cache."""
    name = "ssdlite320_mobilenet_v3_large"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = detect.cached_weights_path(name)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"a download cut short")
    with pytest.raises(PoserError, match="cannot be read.*delete that file"):
        detect.create_detector(name, None, "cpu", 0.05)
