import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from poser import __version__
from poser.cli import app

runner = CliRunner()
COMMANDS = ["fetch-coco", "fetch-lsp", "synth", "train", "eval", "annotate", "demo", "export", "bench"]


def test_help_lists_every_command_with_one_line():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in COMMANDS:
        # "│ train    Train a DeepPose model ..." : the command, then its description
        assert re.search(rf"^\W*{cmd}\s{{2,}}[A-Z]\w+ \w+", res.output, re.M), cmd


def test_help_reads_whole_at_80_columns_in_a_newcomers_order():
    res = runner.invoke(app, ["--help"], env={"COLUMNS": "80"}, terminal_width=80)
    listed = re.findall(r"^\s+([a-z][a-z-]+)\s{2,}(.*)$", res.output.split("Commands:")[1], re.M)
    assert [c for c, _ in listed][:4] == ["demo", "annotate", "train", "eval"]
    assert not [c for c, text in listed if text.endswith("...")], listed


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"poser {__version__}"


def test_synth_command_writes_dataset_and_json(tmp_path):
    out, js = tmp_path / "ds", tmp_path / "r.json"
    res = runner.invoke(app, ["synth", str(out), "--images", "10", "--seed", "2", "--json", str(js)])
    assert res.exit_code == 0, res.output
    result = json.loads(js.read_text())
    assert result["splits"]["train"]["images"] == 8 and result["splits"]["val"]["images"] == 2
    assert len(list((out / "train").glob("*.jpg"))) == 8
    again = runner.invoke(app, ["synth", str(out), "--images", "10"])
    assert again.exit_code == 1 and "already exists" in again.output and "Traceback" not in again.output


@pytest.mark.slow
def test_installed_console_script_runs():
    # The real entry point, in a subprocess, as a user runs it.
    res = subprocess.run([sys.executable, "-m", "poser", "eval", "--weights", "missing.safetensors", "--data", "."],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == ["error: weights file not found: missing.safetensors"]


def test_library_draws_no_progress_bars_unless_asked(tmp_path, capsys, monkeypatch):
    """Library code describes its progress; bars appear on stderr only once the CLI (or a
    Python user, with show_messages) asks for them, and only on a terminal (to a file, each bar
    left its last frame as a line)."""
    from poser import console
    from poser.synth.dataset import SynthConfig, generate

    was = console._bars["show"]
    try:
        console.show_messages(bars=False)
        generate(tmp_path / "a", SynthConfig(images=4, seed=0))
        assert "images" not in capsys.readouterr().err
        console.show_messages(bars=True)
        with console.progress("images") as bar:
            bar.add_task("synth", total=1, completed=1)
        assert "synth" not in capsys.readouterr().err          # stderr is not a terminal here
        monkeypatch.setattr(console.console, "_force_terminal", True)
        with console.progress("images") as bar:
            bar.add_task("synth", total=1, completed=1)
        assert "synth" in capsys.readouterr().err
    finally:
        console.show_messages(bars=was)


def test_every_help_shows_its_defaults_none_eaten_as_markup():
    """A '[default: ...]' written in a help string was eaten as Rich markup and left 'Loader
    processes .' behind; help is plain text now."""
    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    for name in names:
        res = runner.invoke(app, [name, "--help"], env={"COLUMNS": "300"})
        assert res.exit_code == 0, (name, res.output)
        text = re.sub(r"\s+", " ", re.sub(r"[│╭╮╰╯─]", " ", res.output))
        assert not re.search(r"\w \.( |$)", text), (name, re.findall(r".{40}\w \.(?: |$)", text))
    out = re.sub(r"\s+", " ", runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300"}).output)
    assert "[default: 0 on the CPU" in out and "[default: OMP_NUM_THREADS" in out and "[default: 90;" in out
    assert "\\[" not in out


def test_every_help_reads_whole_at_80_columns():
    """Nothing cut with '…' and no line past 80 columns (an 80-column terminal truncated the
    detector and backbone names); usage names the arguments in capitals."""
    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    for name in ["", *names]:
        res = runner.invoke(app, [name, "--help"] if name else ["--help"], env={"COLUMNS": "80"})
        assert res.exit_code == 0, (name, res.output)
        long = [line for line in res.output.splitlines() if len(line) > 80]
        assert "…" not in res.output and not long, (name, long)
    usage = runner.invoke(app, ["annotate", "--help"], env={"COLUMNS": "80"}).output
    assert usage.splitlines()[0].endswith(" PATH...") and "<list[str]>" not in usage     # no Python type names
    usage = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "80"}).output.splitlines()[0]
    assert usage.endswith("[OPTIONS] WEIGHTS OUT")
    bench = re.sub(r"\s+", " ", runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "80"}).output)
    assert "data, train, annotate, detect, threads, runtime" in bench


def test_bench_help_names_the_sections_the_registry_runs():
    from poser.bench import SECTIONS, inference  # noqa: F401  (registers its sections)
    from poser.bench.sections import BENCHES

    assert sorted(BENCHES) == sorted(SECTIONS)


def test_poser_export_and_the_export_command_are_one_function(tmp_path, monkeypatch):
    import poser
    import poser.exporter

    assert poser.export is poser.exporter.export
    calls = []
    monkeypatch.setattr(poser.exporter, "export", lambda *a, **k: calls.append((a, k)) or {
        "files": [str(tmp_path / "m.onnx")], "stages": 1})
    res = runner.invoke(app, ["export", str(tmp_path / "w.safetensors"), str(tmp_path / "m.onnx"), "--format", "onnx"])
    assert res.exit_code == 0, res.output
    assert calls and calls[0][0][2] == "onnx"
    res = runner.invoke(app, ["export", str(tmp_path / "w.safetensors"), str(tmp_path / "b.safetensors"),
                              "--share", "0.3"])          # a share of nothing: said, not ignored
    assert res.exit_code == 1 and "--average-with" in res.output and len(calls) == 1
