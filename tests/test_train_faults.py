"""Training's fault cases of the second audit (issue 37): a resume from another folder, a full
disk while saving, a broken or foreign run folder, an absurd cache size. One line each; nothing
saved before is lost."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors import SafetensorError
from typer.testing import CliRunner

from poser.cli import app

runner = CliRunner()


def _train(data, out, *extra):
    return runner.invoke(app, ["train", "--data", str(data), "--backbone", "mobilenet_v3_small", "--input-size", "64",
                               "--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "2", "--workers", "0",
                               "--out", str(out), *map(str, extra)])


def _one_line(res, code=1):
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()[-1]) > 10


def test_resume_from_another_folder_reads_the_runs_own_data(synth_root, tmp_path, monkeypatch):
    """Case 10: config.json's relative --data is read from where the run started."""
    monkeypatch.chdir(synth_root.parent)
    assert _train(synth_root.name, tmp_path / "runs").exit_code == 0
    run = tmp_path / "runs" / "exp1"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / synth_root.name).mkdir(parents=True)       # a decoy of the same relative name
    monkeypatch.chdir(elsewhere)
    res = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "config.json").read_text())["data"] == synth_root.name    # as the user gave it
    assert not any((elsewhere / synth_root.name).iterdir())


def test_a_full_disk_while_saving_is_one_line_and_the_last_save_stays(synth_root, tmp_path, monkeypatch):
    """Case 11: the epoch saved before a failed save still resumes."""
    assert _train(synth_root, tmp_path).exit_code == 0
    run = tmp_path / "exp1"
    before = (run / "last.state.safetensors").read_bytes()
    import safetensors.torch

    def full(*a, **k):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    res = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    _one_line(res)
    assert "could not write" in res.output and "No space left" in res.output
    assert (run / "last.state.safetensors").read_bytes() == before
    monkeypatch.undo()
    res = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    assert res.exit_code == 0, res.output
    (run / "last.state.safetensors").unlink()
    res = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "3"])
    _one_line(res)
    assert "--init" in res.output and "last.safetensors" in res.output


def test_a_broken_or_foreign_run_folder_is_one_line(synth_root, tmp_path):
    """Case 17: a config value of the wrong type; another head's saved state."""
    assert _train(synth_root, tmp_path, "--name", "a").exit_code == 0
    assert _train(synth_root, tmp_path, "--name", "b", "--head", "fc").exit_code == 0
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copy(b / "last.state.safetensors", a / "last.state.safetensors")
    res = runner.invoke(app, ["train", "--resume", str(a), "--epochs", "2"])
    _one_line(res)
    assert "does not fit its config.json" in res.output
    cfg = json.loads((b / "config.json").read_text())
    (b / "config.json").write_text(json.dumps(cfg | {"batch_size": "eight"}))
    res = runner.invoke(app, ["train", "--resume", str(b), "--epochs", "2"])
    _one_line(res)
    assert "batch_size" in res.output and "eight" in res.output


@pytest.mark.parametrize("size", [100000, 8])
def test_an_absurd_cache_size_is_refused_before_any_work(synth_root, tmp_path, size):
    res = _train(synth_root, tmp_path, "--cache-size", size)
    assert res.exit_code != 0 and "--cache-size" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "exp1").exists()
    from poser.data.cache import CacheSpec
    from poser.errors import PoserError

    with pytest.raises(PoserError, match="`cache_size`"):
        CacheSpec(size=size)
