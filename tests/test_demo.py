"""poser demo: every step runs and leaves its outputs (the quick variant; the full one is the
README's main command)."""

import json

import pytest
from typer.testing import CliRunner

from poser.cli import app

pytestmark = pytest.mark.slow


def test_demo_runs_the_whole_pipeline(tmp_path):
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(tmp_path / "demo"), "--json",
                                   str(tmp_path / "d.json")])
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "d.json").read_text())
    assert set(d["steps"]) == {"synthetic dataset", "stage-1 training", "stage-2 training", "evaluation",
                               "annotation"}
    demo = tmp_path / "demo"
    assert (demo / "train" / "stage2" / "best.safetensors").is_file()
    assert (demo / "eval" / "exp1" / "pdj_curve.png").is_file()
    kp = json.loads((demo / "annotate" / "keypoints.json").read_text())
    assert len(kp["items"]) == 20 + 1 and kp["failed"] == []
    assert (demo / "annotate" / "walk.mp4").is_file() and (demo / "annotate" / "figure.jpg").is_file()
    assert "the cascade, stage by stage" in res.output and "poser demo: done" in res.output
    # The pictures draw from the score the demo model's own evaluation found right half the time.
    report = json.loads((demo / "eval" / "exp1" / "metrics.json").read_text())
    measured = report["scores"]["min_score"]
    assert d["min_score"] == (0.2 if measured is None else measured)
    for item in kp["items"]:
        for p in item["persons"]:
            assert all(p["keypoints"][j][2] >= d["min_score"] for j, v in p["visible"].items() if v)
