"""Bad input never crashes a run or corrupts a result: one line, the rest still runs."""

import json
import stat

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from poser.cli import app
from poser.models.deeppose import create_model
from poser.models.weights import save_weights
from poser.skeletons import COCO17
from poser.synth.dataset import one_person

runner = CliRunner()


@pytest.fixture
def tiny(tmp_path):
    """An untrained COCO-17 model file (the plumbing, not accuracy) and two images."""
    w = tmp_path / "tiny.safetensors"
    save_weights(w, create_model("mobilenet_v3_small", 17, head="integral").state_dict(),
                 {"skeleton": "coco17", "joints": list(COCO17.joints), "backbone": "mobilenet_v3_small",
                  "input_size": 64, "head": "integral", "sigma_head": False})
    for name, seed in (("a.png", 1), ("b.png", 2)):
        cv2.imwrite(str(tmp_path / name), one_person(seed=seed)[0])
    return w


def test_bad_boxes_are_reported_by_index_and_skipped(tiny, tmp_path):
    good = {"file_name": "a.png", "bbox": [10, 10, 100, 150], "score": 0.9}
    bad = [{"file_name": "a.png", "bbox": [float("nan"), 0, 10, 10], "score": 0.9},
           {"file_name": "a.png", "bbox": [0, 0, 1e300, 10], "score": 0.9},
           {"file_name": "a.png", "bbox": ["1", 0, 10, 10], "score": 0.9},
           {"file_name": "a.png", "bbox": [0, 0, -5, 10], "score": 0.9},
           {"file_name": "a.png", "bbox": [0, 0, 0, 10], "score": 0.9},
           {"file_name": "a.png", "bbox": [0, 0, 10, 10], "score": "high"}]
    (tmp_path / "boxes.json").write_text(json.dumps([good, *bad]).replace("NaN", "NaN"))
    res = runner.invoke(app, ["annotate", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--weights", str(tiny),
                              "--boxes", str(tmp_path / "boxes.json"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "skipped 6 invalid detection(s) (index 1, 2, 3, 4, 5, 6)" in " ".join(res.output.split())
    text = (tmp_path / "o" / "keypoints.json").read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    persons = {it["source"].split("/")[-1]: it["persons"] for it in doc["items"]}
    assert len(persons["a.png"]) == 1 and persons["a.png"][0]["box"] == [10, 10, 100, 150]
    assert persons["b.png"] == []
    # A file that matches none of the inputs says so.
    (tmp_path / "other.json").write_text(json.dumps([dict(good, file_name="zzz.png")]))
    res = runner.invoke(app, ["annotate", str(tmp_path / "a.png"), "--weights", str(tiny), "--boxes",
                              str(tmp_path / "other.json"), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 0 and "has no detection for any input" in " ".join(res.output.split())


def test_wrongly_typed_predictions_are_one_line(synth_root, tmp_path):
    row = {"image_id": 1, "category_id": 1, "keypoints": [1.0] * 51, "score": 1.0}
    for bad in (dict(row, image_id="1"), dict(row, keypoints=["x"] * 51), dict(row, score="s")):
        (tmp_path / "p.json").write_text(json.dumps([row, bad]))
        res = runner.invoke(app, ["eval", "--data", str(synth_root), "--predictions", str(tmp_path / "p.json"),
                                  "--out", str(tmp_path / "runs")])
        assert res.exit_code == 1 and "entry 1 has values of the wrong type" in res.output, res.output
        assert "Traceback" not in res.output


def test_file_system_errors_are_one_line_naming_the_path(tiny, tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    res = runner.invoke(app, ["annotate", str(tmp_path / "a.png"), "--weights", str(tiny), "--out",
                              str(tmp_path / "taken")])
    assert res.exit_code == 1 and "taken" in res.output and "Traceback" not in res.output, res.output


def test_outputs_respect_the_umask(tiny, tmp_path):
    from poser.files import _UMASK

    res = runner.invoke(app, ["annotate", str(tmp_path / "a.png"), "--weights", str(tiny), "--out",
                              str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    for f in ("keypoints.json", "a.png"):            # not mkstemp's 0600
        assert stat.S_IMODE((tmp_path / "o" / f).stat().st_mode) == 0o666 & ~_UMASK, f


def test_more_stages_than_the_model_has_is_an_error(tiny, tmp_path):
    res = runner.invoke(app, ["annotate", str(tmp_path / "a.png"), "--weights", str(tiny), "--stages", "5",
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "holds a 1-stage model" in res.output


def test_tables_are_not_cut_when_stdout_is_not_a_terminal(tmp_path):
    from poser.console import results

    assert results.width >= 200 or results.is_terminal
    assert np.isfinite(results.width)


def test_a_truncated_jpeg_is_annotated_with_a_warning(tiny, tmp_path):
    img = one_person(seed=3)[0]
    ok, buf = cv2.imencode(".jpg", img)
    (tmp_path / "cut.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    (tmp_path / "whole.jpg").write_bytes(buf.tobytes())
    res = runner.invoke(app, ["annotate", str(tmp_path / "cut.jpg"), str(tmp_path / "whole.jpg"), "--weights",
                              str(tiny), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "keypoints.json").read_text())
    assert [w["source"].split("/")[-1] for w in doc["warnings"]] == ["cut.jpg"]
    assert len(doc["items"]) == 2 and "truncated JPEG" in " ".join(res.output.split())


def test_an_unusable_output_folder_fails_before_the_work(tiny, tmp_path, synth_root, monkeypatch):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub"                       # under a file: no folder can be made there
    res = runner.invoke(app, ["annotate", str(tmp_path / "a.png"), "--weights", str(tiny), "--out", str(out)])
    assert res.exit_code == 1 and "afile" in res.output and "Traceback" not in res.output, res.output
    import poser.evaluate.run as ev

    monkeypatch.setattr(ev.Predictor, "from_file", lambda *a, **k: pytest.fail("the work started"))
    res = runner.invoke(app, ["eval", "--data", str(synth_root), "--weights", str(tiny), "--out", str(out)])
    assert res.exit_code == 1 and "afile" in res.output and "Traceback" not in res.output, res.output
