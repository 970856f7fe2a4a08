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
