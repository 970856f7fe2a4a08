"""The second fault audit's data-loss cases (issue 37): poser replaces only folders it made, and
a zip never turns a folder into a file. Each case failed before its fix."""

from __future__ import annotations

import os
import zipfile

import pytest
from conftest import make_lsp_folder
from typer.testing import CliRunner

from poser.cli import app
from poser.data.fetch.download import extract_zip
from poser.errors import PoserError
from poser.files import OWNED, atomic_dir, check_replaceable

runner = CliRunner()


def _tree(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_fetch_lsp_into_a_folder_of_the_users_refuses_and_keeps_it(tmp_path):
    src = tmp_path / "lspsrc"
    src.mkdir()
    make_lsp_folder(src, "lspet")
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "thesis.txt").write_text("x")
    (proj / "src" / "a.py").write_text("print(1)")
    before = _tree(proj)
    res = runner.invoke(app, ["fetch-lsp", "--from", str(src), "--data", str(proj), "--no-prepare"])
    assert res.exit_code != 0
    assert "poser did not write" in res.output and "thesis.txt" in res.output
    assert _tree(proj) == before


def test_fetch_lsp_into_dot_refuses_in_one_line(tmp_path, monkeypatch):
    src = tmp_path / "lspsrc"
    src.mkdir()
    make_lsp_folder(src, "lspet")
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.md").write_text("mine")
    monkeypatch.chdir(work)
    res = runner.invoke(app, ["fetch-lsp", "--from", str(src), "--data", ".", "--no-prepare"])
    assert res.exit_code != 0 and "notes.md" in res.output and "Traceback" not in res.output
    assert (work / "notes.md").read_text() == "mine"


def test_fetch_lsp_reimports_into_its_own_folder_and_an_empty_one(tmp_path):
    src = tmp_path / "lspsrc"
    src.mkdir()
    make_lsp_folder(src, "lspet")
    empty = tmp_path / "empty"
    empty.mkdir()
    for dest in (empty, empty):         # the second run replaces what the first made
        res = runner.invoke(app, ["fetch-lsp", "--from", str(src), "--data", str(dest), "--no-prepare"])
        assert res.exit_code == 0, res.output
    assert (empty / OWNED).is_file() and len(list((empty / "images").iterdir())) == 5
    legacy = tmp_path / "legacy"        # made by an older poser: poser's names only, no marker
    legacy.mkdir()
    (legacy / "joints.mat").write_bytes(b"old")
    (legacy / "images").mkdir()
    res = runner.invoke(app, ["fetch-lsp", "--from", str(src), "--data", str(legacy), "--no-prepare"])
    assert res.exit_code == 0, res.output
    assert (legacy / "joints.mat").read_bytes() == (src / "joints.mat").read_bytes()


def test_synth_overwrite_of_dot_or_a_users_folder_refuses(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("x")
    monkeypatch.chdir(mine)
    for target in (".", str(mine)):
        res = runner.invoke(app, ["synth", target, "--images", "4", "--overwrite"])
        assert res.exit_code != 0 and "poser did not write" in res.output, res.output
    assert (mine / "thesis.txt").read_text() == "x"
    made = tmp_path / "made"
    for _ in range(2):                  # poser's own folder is replaced, as --overwrite says
        res = runner.invoke(app, ["synth", str(made), "--images", "4", "--overwrite"])
        assert res.exit_code == 0, res.output


def test_check_replaceable_names_the_rule(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(PoserError, match="not a folder poser made"):
        check_replaceable(f)
    check_replaceable(tmp_path / "absent")
    with atomic_dir(tmp_path / "d") as d:
        (d / "x").write_text("1")
    check_replaceable(tmp_path / "d")                   # marked: poser's
    os.remove(tmp_path / "d" / OWNED)
    with pytest.raises(PoserError, match="x"):
        check_replaceable(tmp_path / "d")
    check_replaceable(tmp_path / "d", known=("x",))


def test_a_zip_file_entry_never_replaces_a_folder(tmp_path):
    root = tmp_path / "d"
    (root / "precious").mkdir(parents=True)
    (root / "precious" / "work.txt").write_text("keep")
    z = tmp_path / "mirror.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("precious", b"a file named like the folder")
        zf.writestr("annotations/a.json", b"{}")
    with pytest.raises(PoserError, match="would replace a folder"):
        extract_zip(z, root)
    assert (root / "precious" / "work.txt").read_text() == "keep"
    assert not (root / "annotations").exists()         # checked whole before anything moved


# --- outputs never replace inputs, never land outside --out ---------------------------------

def _photo(path):
    import cv2

    from poser.synth.dataset import one_person

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), one_person(seed=3, side=160)[0])
    return path


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_an_output_option_naming_an_input_is_refused_before_any_work(tmp_path):
    photo = _photo(tmp_path / "photo.jpg")
    os.link(photo, tmp_path / "link.jpg")
    boxes = tmp_path / "b.json"
    boxes.write_text('[{"file_name": "photo.jpg", "bbox": [10, 10, 60, 120], "score": 0.9}]')
    preds = tmp_path / "p.json"
    preds.write_text("[]")
    weights = tmp_path / "w.safetensors"
    from poser.inference.predictor import DEFAULT_WEIGHTS

    weights.write_bytes(DEFAULT_WEIGHTS.read_bytes())
    before = _tree(tmp_path)
    cases = [
        ("annotate", photo, "--json", photo, "--out", tmp_path / "o1"),
        ("annotate", photo, "--json", tmp_path / "link.jpg", "--out", tmp_path / "o2"),     # a hard link
        ("annotate", photo, "--boxes", boxes, "--save-boxes", boxes, "--out", tmp_path / "o3"),
        ("annotate", tmp_path, "--save-boxes", photo, "--out", tmp_path / "o4"),           # inside an input folder
        ("eval", "--predictions", preds, "--data", tmp_path, "--json", preds),
        ("export", weights, weights, "--storage", "fp16"),
    ]
    for case in cases:
        res = _run(*case)
        assert res.exit_code != 0 and "never writes over its inputs" in res.output, (case, res.output)
    assert _tree(tmp_path) == before
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_annotate_dotdot_writes_inside_out_only(tmp_path, monkeypatch):
    _photo(tmp_path / "a" / "photos" / "p1.jpg")
    (tmp_path / "a" / "photos" / "sub").mkdir()
    (tmp_path / "b" / "out").mkdir(parents=True)
    (tmp_path / "b" / "p1.jpg").write_bytes(b"unrelated")
    monkeypatch.chdir(tmp_path / "a" / "photos" / "sub")
    res = _run("annotate", "..", "--out", tmp_path / "b" / "out", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "b" / "p1.jpg").read_bytes() == b"unrelated"
    assert (tmp_path / "b" / "out" / "photos" / "p1.jpg").is_file()


def test_a_file_in_out_that_poser_did_not_write_is_kept(tmp_path):
    photo = _photo(tmp_path / "in" / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"someone else's")
    for _ in range(2):                  # the second run replaces its own copy, not the stranger
        res = _run("annotate", photo, "--out", out, "--device", "cpu")
        assert res.exit_code == 0, res.output
    assert (out / "a.png").read_bytes() == b"someone else's"
    assert (out / "a.annotated.png").is_file() and not (out / "a.annotated_2.png").exists()


def test_annotating_dot_twice_skips_its_own_outputs(tmp_path, monkeypatch):
    import json

    for n in (1, 2):
        _photo(tmp_path / f"p{n}.jpg")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        res = _run("annotate", ".", "--device", "cpu", "--json", tmp_path / "r.json")
        assert res.exit_code == 0, res.output
    doc = json.loads(next((tmp_path / "runs" / "annotate").glob("*2/keypoints.json")).read_text())
    assert len(doc["items"]) == 2


# --- results are written, per item, whatever else fails ---------------------------------------

def test_a_second_run_into_the_same_out_keeps_the_first_runs_partial_and_results(tmp_path):
    """Case 6: another run's partial video in --out is not this run's; a failed second run does
    not take the first run's results out of keypoints.json."""
    import json

    from poser.synth.clips import write_video

    clip = tmp_path / "clip.mp4"
    write_video(clip, 6, (256, 160), 10.0, seed=3, step=0, side=128, origin=(40, 16))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".clip.partial.mp4").write_bytes(b"another run, still writing")
    res = _run("annotate", clip, "--out", out, "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert (out / ".clip.partial.mp4").read_bytes() == b"another run, still writing"
    assert len(json.loads((out / "keypoints.json").read_text())["items"]) == 6
    clip.write_bytes(b"not a video any more")
    res = _run("annotate", clip, "--out", out, "--device", "cpu")
    doc = json.loads((out / "keypoints.json").read_text())
    assert [f["source"] for f in doc["failed"]] == [str(clip)]
    assert len(doc["items"]) == 6 and (out / "clip.mp4").is_file()     # the first run's, still true


def test_a_failed_write_fails_that_item_only_and_names_the_file(tmp_path, monkeypatch):
    """Case 7: a full disk for one copy; and a legal 250-byte name (its temporary name must be too)."""
    import errno
    import json

    import poser.annotate.run as run

    names = ["a.jpg", "b.jpg", "c" * 246 + ".jpg"]
    photos = [_photo(tmp_path / "in" / n) for n in names]
    real = run.atomic_path

    def full_for_b(path):
        if path.name == "b.jpg":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path)

    monkeypatch.setattr(run, "atomic_path", full_for_b)
    out = tmp_path / "out"
    res = _run("annotate", *photos, "--out", out, "--device", "cpu")
    doc = json.loads((out / "keypoints.json").read_text())
    assert [f["source"] for f in doc["failed"]] == [str(photos[1])]
    assert str(out / "b.jpg") in doc["failed"][0]["error"] and "No space left" in doc["failed"][0]["error"]
    assert sorted(i["source"] for i in doc["items"]) == [str(photos[0]), str(photos[2])]
    assert (out / "a.jpg").is_file() and (out / names[2]).is_file() and not (out / "b.jpg").exists()
    assert res.exit_code != 0 and "b.jpg" in res.output


def test_a_folder_where_a_result_file_goes_is_refused_before_the_work(tmp_path):
    """Case 8: --save-boxes naming a folder, or a folder called keypoints.json in --out."""
    photo = _photo(tmp_path / "p.jpg")
    (tmp_path / "boxes").mkdir()
    res = _run("annotate", photo, "--save-boxes", tmp_path / "boxes", "--out", tmp_path / "o1")
    assert res.exit_code != 0 and "is a folder" in res.output and "Traceback" not in res.output
    (tmp_path / "o2" / "keypoints.json").mkdir(parents=True)
    res = _run("annotate", photo, "--out", tmp_path / "o2")
    assert res.exit_code != 0 and "is a folder" in res.output
    assert not (tmp_path / "o1").exists() and list((tmp_path / "o2").iterdir()) == [tmp_path / "o2" / "keypoints.json"]


def test_a_run_name_never_leads_outside_runs(tmp_path, monkeypatch):
    """Case 19: `--name ../../x` or an absolute name wrote outside runs/<command>/."""
    photo = _photo(tmp_path / "p.jpg")
    monkeypatch.chdir(tmp_path)
    for name in ("../../x", str(tmp_path / "abs"), "..", "a/b"):
        for cmd in (["annotate", photo], ["train", "--data", tmp_path, "--epochs", "1"],
                    ["eval", "--data", tmp_path, "--predictions", photo]):
            res = _run(*cmd, "--name", name)
            assert res.exit_code != 0 and "a run name is one folder name" in res.output, (cmd, name, res.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jpg"]


def test_annotate_quiets_opencvs_per_frame_warnings_while_it_runs(tmp_path, monkeypatch):
    """Case 19: a video on a full disk printed 57 OpenCV WARN lines before poser's one error."""
    import cv2

    import poser.annotate.run as run

    seen = []
    real = run.FrameWriter

    def spy(*args, **kwargs):
        seen.append(cv2.utils.logging.getLogLevel())
        return real(*args, **kwargs)

    from poser.synth.clips import write_video

    write_video(tmp_path / "v.mp4", 3, (256, 160), 10.0, seed=3, step=0, side=128, origin=(40, 16))
    monkeypatch.setattr(run, "FrameWriter", spy)
    before = cv2.utils.logging.getLogLevel()
    assert _run("annotate", tmp_path / "v.mp4", "--out", tmp_path / "o", "--device", "cpu").exit_code == 0
    assert seen == [cv2.utils.logging.LOG_LEVEL_ERROR] and cv2.utils.logging.getLogLevel() == before
