"""Training end to end on the CPU: it learns, resumes exactly, runs under DDP, stops safely."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from poser import geometry as g
from poser.cli import app
from poser.data.cache import Cache, CacheSpec, cache_dir
from poser.errors import PoserError
from poser.evaluate.metrics import pcp, pdj
from poser.inference.predictor import Predictor
from poser.models.deeppose import load_model
from poser.models.weights import read_meta
from poser.runs import read_jsonl
from poser.train import loop as engine
from poser.train import plumbing
from poser.train.augment import Augment, make_batch
from poser.train.config import TrainConfig
from poser.train.distributed import launch
from poser.train.folder import start_run
from poser.train.loop import fit
from poser.train.losses import PoseLoss
from poser.train.state import load_state

runner = CliRunner()


def _mean_pose_scores(root: Path, size: int) -> dict:
    """PCP / PDJ@0.2 on val of always predicting the training set's mean pose (in the crop)."""
    spec = CacheSpec()
    tr, va = Cache(cache_dir(root, "train", spec)), Cache(cache_dir(root, "val", spec))

    def targets(c: Cache) -> dict:
        idx = np.arange(len(c))
        return make_batch(torch.stack([c.image(i) for i in idx]), c.boxes, c.keypoints, size, c.skeleton)

    t = targets(tr)
    w = t["weight"].numpy()[..., None]
    mean = (t["target"].numpy() * w).sum(0) / w.sum(0)
    v = targets(va)
    pred = g.to_image(v["matrix"], np.repeat(mean[None], len(va), 0), size)
    return {"pcp": pcp(pred, va.keypoints, va.skeleton)["mean"], "pdj": pdj(pred, va.keypoints, va.skeleton)["at_0.2"]}


def test_a_short_cpu_run_learns_far_beyond_the_mean_pose(trained_run, learn_root):
    rows = read_jsonl(trained_run / "metrics.jsonl")
    base = _mean_pose_scores(learn_root, 96)
    best = max(rows, key=lambda r: r["val_pdj@0.2"])
    print("mean pose", base, "trained", {k: best[k] for k in ("val_pcp", "val_pdj@0.2")})
    assert 0.05 < base["pdj"] < 0.2                        # the baseline is a real, non-trivial number
    assert best["val_pdj@0.2"] > 2.5 * base["pdj"]
    assert best["val_pcp"] > 4.0 * base["pcp"]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert [r["step"] for r in rows] == [rows[0]["step"] * (e + 1) for e in range(8)]
    # The best weights reproduce the logged score from the file alone.
    model, spec = load_model(trained_run / "best.safetensors")
    assert spec.input_size == 96 and spec.skeleton == "coco17" and spec.backbone == "mobilenet_v3_small"
    val = Cache(cache_dir(learn_root, "val", CacheSpec()))
    _, m = engine.evaluate_cache(Predictor([(model, spec)]), val)
    assert m["pdj"]["at_0.2"] == pytest.approx(best["val_pdj@0.2"], abs=1e-6)


def _tiny(root: Path, out: Path, **kw) -> TrainConfig:
    cfg = TrainConfig(data=str(root), out=str(out), backbone="mobilenet_v3_small", input_size=64, epochs=2,
                      steps_per_epoch=3, batch_size=8, workers=0, device="cpu", seed=3, aug=Augment(flip=0.0))
    return replace(cfg, **kw)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.mark.parametrize("head", ["integral", "fc"])
def test_resume_after_an_interruption_gives_the_same_weights(synth_root, tmp_path, monkeypatch, head):
    full = fit(_tiny(synth_root, tmp_path, name="full", head=head))
    calls = {"n": 0}

    def ctrl_c_in_step_4(self, d):       # checks: 3 steps, end of epoch 1, then epoch 2's first step
        calls["n"] += 1
        return calls["n"] == 5

    monkeypatch.setattr(plumbing.StopRequest, "agreed", ctrl_c_in_step_4)
    with pytest.raises(PoserError, match=r"interrupted at epoch 2, step 1.*--resume") as e:
        fit(_tiny(synth_root, tmp_path, name="cut", head=head))
    assert e.value.exit_code == 130
    cut = tmp_path / "cut"
    state = load_state(cut / "last.state.safetensors")
    assert (state["epoch"], state["step"], state["global_step"]) == (1, 1, 4)
    monkeypatch.undo()
    fit(replace(TrainConfig.from_dict(json.loads((cut / "config.json").read_text())), resume=str(cut)))
    a, b = _weights(Path(full["run"]) / "last.safetensors"), _weights(cut / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra, rb = read_jsonl(Path(full["run"]) / "metrics.jsonl"), read_jsonl(cut / "metrics.jsonl")
    assert [r["step"] for r in rb] == [3, 6]
    assert ra[0]["train_loss"] == rb[0]["train_loss"] and ra[0]["val_pdj@0.2"] == rb[0]["val_pdj@0.2"]
    assert ra[1]["val_pdj@0.2"] == rb[1]["val_pdj@0.2"]
    assert ra[1]["train_loss"] == pytest.approx(rb[1]["train_loss"], rel=1e-5)   # the whole epoch's, not 2 of 3 steps
    meta = read_meta(cut / "last.safetensors")
    assert meta["head"] == head and meta["loss"] == ("l1" if head == "integral" else "rle")


@pytest.mark.slow
def test_two_cpu_processes_under_ddp_end_with_identical_weights(synth_root, tmp_path, capfd):
    res = runner.invoke(app, ["train", "--data", str(synth_root), "--device", "cpu", "--procs", "2", "--backbone",
                              "mobilenet_v3_small", "--input-size", "64", "--epochs", "1", "--batch-size", "8",
                              "--steps-per-epoch", "2", "--workers", "0", "--out", str(tmp_path), "--name", "ddp"])
    assert res.exit_code == 0, res.output
    rows = read_jsonl(tmp_path / "ddp" / "metrics.jsonl")
    # Each step consumed 2 x 8 samples (one batch per rank); the ranks' parameters are bit-identical.
    assert len(rows) == 1 and rows[0]["replicas_identical"] is True and rows[0]["step"] == 2
    assert read_meta(tmp_path / "ddp" / "last.safetensors")["epoch"] == 1
    assert "trained:" in res.output and "ddp" in res.output
    said = capfd.readouterr().err           # rank 0's messages, as one process shows them
    assert "run folder" in said and "2 process(es)" in said and "epoch 1:" in said
    with pytest.raises(PoserError, match="`procs` is for CPU"):
        launch(fit, _tiny(synth_root, tmp_path), procs=2, device="cuda" if torch.cuda.is_available() else "meta")


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_weights(synth_root, tmp_path, monkeypatch):
    real = PoseLoss.forward
    calls = {"n": 0}

    def poisoned(self, *args):
        total, parts = real(self, *args)
        calls["n"] += 1
        return (total * float("nan") if calls["n"] == 5 else total), parts

    monkeypatch.setattr(PoseLoss, "forward", poisoned)
    with pytest.raises(PoserError, match=r"NaN/inf at epoch 2, step 2.*last good weights"):
        fit(_tiny(synth_root, tmp_path, name="nan"))
    state, meta = _weights(tmp_path / "nan" / "last.safetensors"), read_meta(tmp_path / "nan" / "last.safetensors")
    assert meta["epoch"] == 1 and all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nan_loss_in_the_first_epoch_does_not_point_at_missing_weights(synth_root, tmp_path, monkeypatch):
    real = PoseLoss.forward

    def poisoned(self, *args):
        total, parts = real(self, *args)
        return total * float("nan"), parts

    monkeypatch.setattr(PoseLoss, "forward", poisoned)
    with pytest.raises(PoserError, match=r"epoch 1, step 1.*No epoch finished yet"):
        fit(_tiny(synth_root, tmp_path, name="nan1"))


def test_train_command_writes_a_complete_run_folder_and_resumes_for_more_epochs(synth_root, tmp_path):
    args = ["train", "--data", str(synth_root), "--backbone", "mobilenet_v3_small", "--input-size", "64",
            "--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "2", "--workers", "0", "--flip", "0",
            "--loss", "l2", "--out", str(tmp_path), "--json", str(tmp_path / "s.json")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    run = tmp_path / "exp1"
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.jsonl", "last.safetensors",
                                              "best.safetensors", "last.state.safetensors"}
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["loss"] == "l2" and cfg["aug"]["flip"] == 0.0 and cfg["input_size"] == 64
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["run"] == str(run) and summary["last"]["epoch"] == 1
    meta = read_meta(run / "best.safetensors")
    assert meta["loss"] == "l2" and not meta["sigma_head"] and meta["mean"] and meta["std"] and meta["poser_version"]
    res = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    assert res.exit_code == 0, res.output
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [2, 4]
    assert not (tmp_path / "exp2").exists()
    assert json.loads((run / "config.json").read_text())["epochs"] == 2     # the schedule it followed
    res = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2"])
    assert res.exit_code == 1 and "2 epochs are already done" in res.output
    # Options a started run cannot change are refused by name, not silently dropped.
    res = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "3", "--lr", "0.5", "--batch-size", "4"])
    msg = " ".join(res.output.split())
    refused = msg.split("config.json): ")[1].split(" cannot change")[0]
    assert res.exit_code == 1 and refused == "--batch-size, --lr"         # --epochs may change
    assert len(read_jsonl(run / "metrics.jsonl")) == 2
    # ... and Python resumes in one call.
    from poser.train.launch import resume

    assert resume(run, epochs=3)["last"]["epoch"] == 3


def test_init_fine_tunes_the_whole_model_from_a_weights_file(synth_root, tmp_path):
    """--init starts backbone and head from a weights file (here at another input size); a
    file of another architecture is refused by name, in one line."""
    base = ["train", "--data", str(synth_root), "--backbone", "mobilenet_v3_small", "--epochs", "1", "--batch-size",
            "8", "--steps-per-epoch", "1", "--workers", "0", "--flip", "0", "--out", str(tmp_path)]
    assert runner.invoke(app, [*base, "--input-size", "64", "--name", "src"]).exit_code == 0
    src = tmp_path / "src" / "last.safetensors"
    cfg = TrainConfig(data=str(synth_root), out=str(tmp_path), name="ft", backbone="mobilenet_v3_small",
                      input_size=96, init=str(src), epochs=1, batch_size=8, workers=0, device="cpu")
    t = engine.setup(start_run(cfg), engine.distributed.init("cpu"))
    want, _ = load_model(src)
    got = t.objective.model.state_dict()
    assert all(torch.equal(v, got[k]) for k, v in want.state_dict().items())
    assert read_meta(src)["cache_size"] == 256
    res = runner.invoke(app, [*base, "--input-size", "64", "--head", "fc", "--init", str(src)])
    msg = " ".join(res.output.split())
    assert res.exit_code == 1 and "does not fit this run: head integral (this run: fc)" in msg, res.output
    res = runner.invoke(app, [*base, "--init", str(tmp_path / "none.safetensors")])
    assert res.exit_code == 1 and "no such weights file" in res.output



def test_backbone_lr_0_is_a_linear_probe(synth_root, tmp_path):
    """--backbone-lr 0 freezes the backbone: after a run from --init, the backbone's weights are
    the init's to the bit and the head's have moved (LP-FT: probe the head, then fine-tune)."""
    base = ["train", "--data", str(synth_root), "--backbone", "mobilenet_v3_small", "--epochs", "1", "--batch-size",
            "8", "--steps-per-epoch", "2", "--workers", "0", "--input-size", "64", "--out", str(tmp_path)]
    assert runner.invoke(app, [*base, "--name", "src"]).exit_code == 0
    src = tmp_path / "src" / "last.safetensors"
    res = runner.invoke(app, [*base, "--name", "probe", "--init", str(src), "--backbone-lr", "0", "--lr", "1e-2"])
    assert res.exit_code == 0, res.output
    before, after = load_file(str(src)), load_file(str(tmp_path / "probe" / "last.safetensors"))
    backbone = [k for k in before if k.startswith("backbone.") and before[k].is_floating_point()]
    head = [k for k in before if k.startswith("head.")]
    assert backbone and head
    assert all(torch.equal(before[k], after[k]) for k in backbone)
    assert any(not torch.equal(before[k], after[k]) for k in head)
    res = runner.invoke(app, [*base, "--name", "neg", "--backbone-lr", "-1"])
    assert res.exit_code != 0 and "--backbone-lr" in " ".join(res.output.split())

def test_train_errors_are_one_line(synth_root, tmp_path):
    cases = [
        (["--gpus", "2"], "no CUDA device"),
        (["--device", "cuda"], "no CUDA device"),
        (["--backbone", "vgg"], "unknown backbone"),
        (["--batch-size", "4096"], "fewer than one batch"),
        (["--pretrained", str(tmp_path / "nope.pth")], "no such file"),
    ]
    if torch.cuda.is_available():
        cases = cases[2:]
    for extra, msg in cases:
        res = runner.invoke(app, ["train", "--data", str(synth_root), "--workers", "0", "--out", str(tmp_path),
                                  "--epochs", "1", *extra])
        assert res.exit_code == 1, (extra, res.output)
        assert msg in res.output and "Traceback" not in res.output, (extra, res.output)
    res = runner.invoke(app, ["train", "--resume", str(tmp_path / "none")])
    assert res.exit_code == 1 and "not a run folder" in res.output
