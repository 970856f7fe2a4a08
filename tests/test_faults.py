"""Defects of the fault audit (issue 25), each reproduced as the audit found it: nothing lost,
nothing overwritten, no traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import torch
from typer.testing import CliRunner

from poser.cli import app
from poser.synth.clips import write_video
from poser.synth.dataset import one_person

runner = CliRunner()


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".part" in p.name)


def test_annotating_into_the_inputs_folder_never_replaces_a_photo(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, seed in (("a.jpg", 1), ("b.jpg", 2)):
        cv2.imwrite(str(photos / name), one_person(seed=seed)[0])
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    res = runner.invoke(app, ["annotate", str(photos / "a.jpg"), str(photos / "b.jpg"), "--out", str(photos)])
    assert res.exit_code == 0, res.output
    assert all((photos / n).read_bytes() == b for n, b in before.items())        # the sources, untouched
    assert (photos / "a.annotated.jpg").is_file() and (photos / "b.annotated.jpg").is_file()
    assert "no input and no file poser did not write is replaced" in res.output
    items = json.loads((photos / "keypoints.json").read_text())["items"]
    assert sorted(i["source"] for i in items) == [str(photos / "a.jpg"), str(photos / "b.jpg")]


def test_a_video_the_writer_could_not_finish_is_not_kept(tmp_path, monkeypatch):
    """As on a full disk: OpenCV's writer logs each failed frame and raises nothing."""
    import poser.video.io as vio

    real = cv2.VideoWriter

    class FullDisk:
        def __init__(self, *args):
            self.w, self.n = real(*args), 0

        def isOpened(self):     # noqa: N802 (OpenCV's name)
            return self.w.isOpened()

        def write(self, frame):
            self.n += 1
            if self.n <= 5:     # then the disk is full: frames are dropped without an error
                self.w.write(frame)

        def release(self):
            self.w.release()

    write_video(tmp_path / "clip.mp4", 20, (256, 160), 10.0, seed=3, step=0, side=128, origin=(40, 16))
    monkeypatch.setattr(vio.cv2, "VideoWriter", FullDisk)
    cv2.imwrite(str(tmp_path / "p.png"), one_person(seed=4)[0])
    out = tmp_path / "out"
    res = runner.invoke(app, ["annotate", str(tmp_path / "clip.mp4"), str(tmp_path / "p.png"), "--out", str(out)])
    assert res.exit_code != 0 and "could not be written completely" in res.output and "Traceback" not in res.output
    assert not (out / "clip.mp4").exists() and _leftovers(out) == []
    kp = json.loads((out / "keypoints.json").read_text())
    assert [f["source"] for f in kp["failed"]] == [str(tmp_path / "clip.mp4")]
    assert [i["source"] for i in kp["items"]] == [str(tmp_path / "p.png")] and (out / "p.png").is_file()


def test_sigterm_keeps_what_finished_marks_the_interrupted_and_cleans_partials(tmp_path):
    cv2.imwrite(str(tmp_path / "img.png"), one_person(seed=5)[0])
    write_video(tmp_path / "short.mp4", 6, (256, 160), 10.0, seed=6, step=0, side=128, origin=(40, 16))
    write_video(tmp_path / "long.mp4", 1500, (256, 160), 25.0, seed=7, step=0, side=128, origin=(40, 16))
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from poser.cli import main; main()", "annotate", str(tmp_path / "img.png"),
           str(tmp_path / "short.mp4"), str(tmp_path / "long.mp4"), "--out", str(out), "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ | {"COLUMNS": "200"})
    deadline = time.time() + 120
    while not list(out.glob(".long.*partial.mp4")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read().decode()        # still on the long video
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 130 and time.time() - t0 < 10, output
    kp = json.loads((out / "keypoints.json").read_text())
    done = {i["source"] for i in kp["items"]}
    assert done == {str(tmp_path / "img.png"), str(tmp_path / "short.mp4")}
    assert kp["failed"] == [{"source": str(tmp_path / "long.mp4"), "error": "interrupted"}]
    assert (out / "short.mp4").is_file() and not (out / "long.mp4").exists()
    assert _leftovers(out) == [] and "Traceback" not in output


def test_paths_and_messages_print_literally_never_as_rich_markup(tmp_path):
    cv2.imwrite(str(tmp_path / "p.png"), one_person(seed=4)[0])
    res = runner.invoke(app, ["annotate", str(tmp_path / "p.png"), "--weights", str(tmp_path / "nope[/]x.safetensors")])
    assert res.exit_code == 1 and "nope[/]x.safetensors" in res.output and "Traceback" not in res.output
    out = tmp_path / "out" / "a[/]b"
    res = runner.invoke(app, ["annotate", str(tmp_path / "p.png"), "--out", str(out)])
    assert res.exit_code == 0 and "a[/]b" in res.output.replace("\n", ""), res.output
    assert (out / "p.png").is_file()


def test_nan_rows_and_extra_guesses_cannot_win_the_matching():
    import numpy as np

    from poser.evaluate.predictions import match_predictions
    from poser.skeletons import LSP14

    rng = np.random.default_rng(0)
    k = LSP14.num_joints
    gt = np.concatenate([rng.uniform(0, 200, (3, k, 2)), np.ones((3, k, 1))], -1)
    ids = np.array([1, 1, 2])                    # image 1 holds two people, image 2 one

    def row(iid, xy, score):
        kp = np.concatenate([xy, np.ones((k, 1))], -1)
        return {"image_id": iid, "score": score, "keypoints": kp.ravel().tolist()}

    correct = [row(i, g[:, :2], 0.9) for i, g in zip(ids.tolist(), gt, strict=True)]
    nan_rows = [row(i, np.full((k, 2), np.nan), 1.0) for i in (1, 2)]
    pred, _, info = match_predictions(nan_rows + correct, ids, gt, LSP14)
    assert np.allclose(pred, gt[..., :2]) and info["dropped_non_finite"] == 2 and info["matched"] == 3
    # 100 low-scored guesses an image beside the right answers: the answers keep every person
    guesses = [row(i, rng.uniform(0, 200, (k, 2)), 0.1) for i in (1, 2) for _ in range(100)]
    pred, _, info = match_predictions(guesses + correct, ids, gt, LSP14)
    assert np.allclose(pred, gt[..., :2]) and info["unmatched"] == 200
    # guesses alone, all scored alike: as good as the first ones, never the closest of 100
    alone, _, _ = match_predictions(guesses, ids, gt, LSP14)
    first, _, _ = match_predictions([guesses[0], guesses[1], guesses[100]], ids, gt, LSP14)
    assert np.allclose(alone, first)


def test_python_api_refuses_bad_boxes_images_and_options_in_one_line():
    import numpy as np
    import pytest

    import poser
    from poser.errors import PoserError

    model = poser.load(runtime="torch")
    img = one_person(seed=4)[0]
    for bad in ([np.nan, 0, 50, 50], [0, 0, 0, 50], [0, 0, -5, 50], [0, 0, 1e12, 1e12], [0, 0, np.inf, 5],
                np.zeros(5), "abc"):
        with pytest.raises(PoserError, match="^boxes: "):
            model(img, boxes=bad)
    good = model(img, boxes=[10, 10, 100, 200])             # a (4,) box is one person
    assert good.keypoints.shape[0] == 1 and np.isfinite(good.keypoints).all()
    with pytest.raises(PoserError, match="uint8 image"):
        model(np.zeros((0, 0, 3), np.uint8))
    with pytest.raises(PoserError, match="^search: "):
        model(img, search=-1)
    with pytest.raises(PoserError, match="tpu"):
        poser.load(device="tpu")


def test_a_run_resumed_twice_at_once_is_refused_and_a_killed_save_is_tidied(synth_root, tmp_path):
    from poser.runs import read_jsonl, run_lock

    args = ["train", "--data", str(synth_root), "--backbone", "mobilenet_v3_small", "--input-size", "64",
            "--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "2", "--workers", "0", "--out", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    run = tmp_path / "exp1"
    with run_lock(run):                 # another process is training into it
        res = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    assert res.exit_code == 1 and "is in use" in res.output and len(read_jsonl(run / "metrics.jsonl")) == 1
    # kill -9 during epoch 2's save: its metrics line written, its state not; a temp file left
    line = (run / "metrics.jsonl").read_text().splitlines()[0].replace('"epoch": 1', '"epoch": 2')
    with open(run / "metrics.jsonl", "a") as f:
        f.write(line + "\n" + line[:30])                   # and a line cut in half
    (run / ".last.safetensors.x1y2.part").write_bytes(b"half a file")
    # the run's thread count is recorded and a resume trains with it, whatever is free now
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["threads"] >= 1
    (run / "config.json").write_text(json.dumps(cfg | {"threads": 1}))
    before = torch.get_num_threads()
    try:
        res = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    assert _leftovers(run) == []


def test_bad_ids_options_and_urls_are_one_line_never_a_traceback(tmp_path, synth_root):
    cv2.imwrite(str(tmp_path / "a.png"), one_person(seed=4)[0])
    box = {"bbox": [1, 2, 30, 40], "score": 0.9}
    for entry in ({"image_id": "abc"}, {"file_name": 123}, {"file_name": "a.png", "frame": "x"}):
        (tmp_path / "b.json").write_text(json.dumps([entry | box]))
        res = runner.invoke(app, ["annotate", str(tmp_path / "a.png"), "--boxes", str(tmp_path / "b.json"),
                                  "--out", str(tmp_path / "o")])
        assert res.exit_code == 1 and "no valid detection" in res.output, (entry, res.output)
        assert isinstance(res.exception, SystemExit)              # not a ValueError / TypeError
    base = ["train", "--data", str(synth_root), "--out", str(tmp_path / "t")]
    for opt, val, msg in (("--lr", "nan", "finite"), ("--lr", "-1", "above 0"), ("--rotate", "nan", "finite"),
                          ("--steps-per-epoch", "0", "at least 1")):
        res = runner.invoke(app, [*base, opt, val])
        assert res.exit_code == 1 and opt in res.output and msg in res.output, (opt, val, res.output)
        assert isinstance(res.exception, SystemExit)
    for url in ("notaurl", "file:///tmp"):
        res = runner.invoke(app, ["fetch-coco", "--base-url", url, "--data", str(tmp_path / "c")])
        assert res.exit_code == 1 and "not an http:// or https:// address" in res.output, res.output


def test_video_records_carry_timestamps_and_a_truncated_video_is_flagged(tmp_path):
    import numpy as np

    write_video(tmp_path / "v.mp4", 5, (256, 160), 10.0, seed=1, step=0, side=128, origin=(40, 16))
    img = one_person(seed=2, side=128)[0]
    vw = cv2.VideoWriter(str(tmp_path / "cut.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (256, 160))
    for _ in range(40):
        canvas = np.full((160, 256, 3), 127, np.uint8)
        canvas[16:144, 40:168] = img
        vw.write(canvas)
    vw.release()
    data = (tmp_path / "cut.avi").read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])         # its header still says 40 frames
    out = tmp_path / "out"
    res = runner.invoke(app, ["annotate", str(tmp_path / "v.mp4"), str(tmp_path / "cut.avi"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    kp = json.loads((out / "keypoints.json").read_text())
    v = [i for i in kp["items"] if i["source"].endswith("v.mp4")]
    assert [round(i["time_ms"]) for i in v] == [0, 100, 200, 300, 400]
    n = sum(i["source"].endswith("cut.avi") for i in kp["items"])
    assert 0 < n < 40 and kp["warnings"][0]["source"].endswith("cut.avi")
    assert f"only {n} of the 40 frames" in kp["warnings"][0]["warning"] and "truncated" in res.output


def test_eval_can_keep_its_cache_outside_the_data_and_checks_json_first(tmp_path):
    from poser.synth.dataset import SynthConfig, generate

    data = tmp_path / "ds"
    generate(data, SynthConfig(images=6, seed=1))
    import shutil

    shutil.rmtree(data / "cache", ignore_errors=True)
    ann = json.loads((data / "annotations" / "person_keypoints_val.json").read_text())
    gt = [{"image_id": a["image_id"], "score": 1.0, "keypoints": a["keypoints"]} for a in ann["annotations"]]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "out").mkdir()
    args = ["eval", "--data", str(data), "--predictions", str(tmp_path / "gt.json"), "--out", str(tmp_path / "r")]
    res = runner.invoke(app, [*args, "--json", str(tmp_path / "out")])          # a folder: refused before work
    said = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code == 1 and "is a folder" in said and not (tmp_path / "r").exists()
    res = runner.invoke(app, [*args, "--cache", str(tmp_path / "c"), "--json", str(tmp_path / "out" / "r.json")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c" / "val-256" / "meta.json").is_file() and not (data / "cache").exists()
    assert json.loads((tmp_path / "out" / "r.json").read_text())["pcp"]["mean"] == 1.0


def test_silent_failures_now_say_so(tmp_path, synth_root):
    from poser.data.coco import read_coco
    from poser.synth.dataset import SynthConfig, generate

    data = tmp_path / "ds"
    generate(data, SynthConfig(images=6, seed=2))
    ann_file = data / "annotations" / "person_keypoints_train.json"
    ann = json.loads(ann_file.read_text())
    kp = ann["annotations"][0]["keypoints"]
    first = next(j for j in range(17) if kp[3 * j + 2] > 0)
    kp[3 * first] = float("nan")                               # a NaN joint marked labelled
    ann_file.write_text(json.dumps(ann))
    inst = read_coco(ann_file, data / "train")
    labelled = inst.keypoints[..., 2] > 0
    assert inst.skipped["non_finite_joints"] == 1 and np.isfinite(inst.keypoints[..., :2][labelled]).all()
    # eval --boxes whose entries match no photo of the split: said, not silently all-missed
    (tmp_path / "b.json").write_text(json.dumps([{"image_id": 999999, "bbox": [1, 2, 30, 40], "score": 0.9}]))
    res = runner.invoke(app, ["eval", "--data", str(synth_root), "--weights", str(_coco_model(tmp_path)),
                              "--boxes", str(tmp_path / "b.json"), "--out", str(tmp_path / "r")])
    assert "has no detection for any photo" in " ".join(res.output.split()), res.output
    # --resume of a run whose config.json is not JSON: one line
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{not json")
    (run / "last.state.safetensors").write_bytes(b"x")
    res = runner.invoke(app, ["train", "--resume", str(run)])
    assert res.exit_code == 1 and "not a readable training config" in res.output
    assert isinstance(res.exception, SystemExit)


def _coco_model(tmp_path):
    from poser.models.deeppose import create_model
    from poser.models.weights import save_model
    from poser.skeletons import COCO17
    from poser.spec import ModelSpec, StageSpec

    path = tmp_path / "coco.safetensors"
    spec = StageSpec(backbone="mobilenet_v3_small", skeleton="coco17", joints=COCO17.joints, input_size=64,
                     head="integral")
    save_model(path, [create_model("mobilenet_v3_small", 17, head="integral").eval().state_dict()], ModelSpec((spec,)))
    return path


def test_joints_off_a_tiny_image_are_never_visible():
    import poser

    model = poser.load(runtime="torch")
    for img in (np.full((1, 1, 3), 127, np.uint8), np.full((3, 200, 3), 127, np.uint8)):
        poses = model(img)
        k = poses.keypoints[0]
        off = (k[:, 0] < -0.5) | (k[:, 0] > img.shape[1] - 0.5) | (k[:, 1] < -0.5) | (k[:, 1] > img.shape[0] - 0.5)
        assert off.any() and (poses.visible[0][off] == 0).all() and (poses.scores[0][off] == 0).all()
        record = poses.to_json()[0]
        assert not any(record["visible"][j] for j, o in zip(model.skeleton.joints, off, strict=True) if o)


def test_a_detector_without_weights_leaves_no_empty_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("poser.detect.detectors.weights_url", lambda name: "http://127.0.0.1:1/w.pth")
    cv2.imwrite(str(tmp_path / "a.png"), one_person(seed=4)[0])
    res = runner.invoke(app, ["annotate", str(tmp_path / "a.png"), "--detector", "auto"])
    said = " ".join(res.output.split())
    assert res.exit_code == 1 and "poser fetch-detector ssdlite320_mobilenet_v3_large" in said, said
    assert "--detector-weights FILE" in said and not (tmp_path / "runs").exists()
    assert "Downloading" not in res.stdout and res.stderr.strip().splitlines()[-1].startswith("error: ")
    res = runner.invoke(app, ["fetch-detector", "auto"])
    said = " ".join(res.output.split())
    assert res.exit_code == 1 and "poser fetch-detector" not in said and "copy" in said, said


def test_a_full_disk_in_train_and_export_is_one_line_and_leaves_no_partial_file(tmp_path, synth_root, monkeypatch):
    import errno

    import safetensors.torch as st

    from poser.inference.predictor import DEFAULT_WEIGHTS

    real = st.save_file

    def full(tensors, path, metadata=None):       # the disk fills while the file is written
        real(tensors, path, metadata=metadata)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st, "save_file", full)       # poser.models.weights imports it when it writes
    res = runner.invoke(app, ["export", str(DEFAULT_WEIGHTS), str(tmp_path / "m.safetensors"), "--storage", "fp16"])
    assert res.exit_code == 1 and "No space left on device" in res.output and isinstance(res.exception, SystemExit)
    assert not (tmp_path / "m.safetensors").exists() and _leftovers(tmp_path) == []
    res = runner.invoke(app, ["train", "--data", str(synth_root), "--backbone", "mobilenet_v3_small", "--input-size",
                              "64", "--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "1", "--workers", "0",
                              "--out", str(tmp_path / "t")])
    assert res.exit_code == 1 and "No space left on device" in res.output and isinstance(res.exception, SystemExit)
    assert _leftovers(tmp_path / "t") == [] and not list((tmp_path / "t").rglob("*.safetensors"))


def test_sigterm_during_synth_leaves_no_part_folder(tmp_path):
    cmd = [sys.executable, "-c", "from poser.cli import main; main()", "synth", str(tmp_path / "ds"), "--images",
           "5000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while not any(".part" in p.name for p in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 130 and "Traceback" not in out, out
    assert not (tmp_path / "ds").exists() and _leftovers(tmp_path) == []
