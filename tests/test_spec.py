"""ModelSpec: every weights file poser ever shipped still loads and predicts what it did, and
bad metadata is one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from poser.errors import PoserError
from poser.inference.predictor import DEFAULT_WEIGHTS, Predictor
from poser.models.weights import read_meta, read_spec, save_weights
from poser.skeletons import LSP14
from poser.spec import ModelSpec, StageSpec
from poser.synth.dataset import one_person

REPO = Path(__file__).resolve().parents[1]
# Predictions of each shipped reference model (commit that shipped it), made before ModelSpec
# existed, on one synthetic figure: a fixed box, the flip test, and the person search (remade when
# the search learnt to skip to its last pass once settled: FIXTURE["search_note"]).
FIXTURE = json.loads((Path(__file__).parent / "data" / "shipped_weights.json").read_text())


def _shipped(commit: str, tmp_path: Path) -> Path:
    if commit == FIXTURE["shipped"]:
        return DEFAULT_WEIGHTS          # the file shipped now
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("no git history here to take the earlier shipped weights from")
    out = tmp_path / f"{commit}.safetensors"
    res = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:poser/weights/reference.safetensors"],
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"commit {commit} is not in this clone's history (shallow clone?)")
    out.write_bytes(res.stdout)
    return out


@pytest.fixture
def two_threads():
    """The fixture's numbers were made on 2 torch threads; another count rounds differently, which
    the person search's re-crops grow to px (1.7 px at 1 thread for 7c78f77)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("commit", sorted(FIXTURE["files"]))
def test_every_shipped_weights_file_loads_and_predicts_as_before(commit, tmp_path, two_threads):
    path = _shipped(commit, tmp_path)
    spec = read_spec(path)
    assert spec.to_meta() | read_meta(path) == spec.to_meta() | spec.to_meta()   # typed fields round-trip
    img, _, _ = one_person(seed=FIXTURE["image"]["seed"], side=FIXTURE["image"]["side"])
    rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    want = FIXTURE["files"][commit]
    p = Predictor.from_file(path)
    box = np.array([FIXTURE["box"]])
    assert np.abs(p.predict_image(rgb, box, flip=False).keypoints[0] - want["box"]).max() < 0.05
    assert np.abs(p.predict_image(rgb, box, flip=False).scores[0] - want["score"]).max() < 1e-3
    assert np.abs(p.predict_image(rgb, box, flip=True).keypoints[0] - want["flip"]).max() < 0.05
    # The search re-crops up to three times: a thread count's rounding grows there to ~1.7 px
    # (of a 240 px image), OpenCV 5.1's resampling against 5.0's to 3.4 px; a change of the
    # search itself moves joints by tens of px
    assert np.abs(p.find_person([rgb], 3, flip=False)[0].keypoints[0] - want["search"]).max() < 5.0


def _meta(**kw) -> dict:
    return {"backbone": "resnet18", "skeleton": "lsp14", "joints": list(LSP14.joints), "input_size": 128} | kw


def test_old_metadata_takes_the_defaults_its_files_were_made_with():
    s = StageSpec.from_meta(_meta())
    assert (s.head, s.sigma_head, s.cache_size, s.decode_radius, s.margin, s.stage) == ("fc", False, 256, None,
                                                                                        1.25, 1)
    two = ModelSpec.from_meta({"stages": [_meta(head="integral"), _meta(head="integral", stage=2, sub_image=1.5)]})
    assert len(two) == 2 and two.first.head == "integral" and two.stages[1].sub_image == 1.5
    assert ModelSpec.from_meta(two.to_meta()) == two and two.to_meta()["stage"] == 2
    assert ModelSpec.from_meta(_meta() | {"field_of_a_newer_poser": 1}).first == s     # unknown keys are ignored


@pytest.mark.parametrize("bad, msg", [
    ({"input_size": -5}, "input_size -5"), ({"input_size": 100000}, "input_size 100000"),
    ({"input_size": "128"}, "input_size '128'"), ({"head": "mlp"}, "unknown head"),
    ({"joints": ["a"]}, "joints do not match"), ({"skeleton": "dog"}, "unknown skeleton"),
    ({"decode_radius": float("nan")}, "decode_radius"), ({"std": [0, 1, 1]}, "std"),
])
def test_bad_metadata_is_one_line_naming_the_file(tmp_path, bad, msg):
    path = tmp_path / "w.safetensors"
    save_weights(path, {}, _meta() | bad)
    with pytest.raises(PoserError, match=msg) as e:
        Predictor.from_file(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_metadata_that_is_not_json_is_one_line(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(1)}, str(path), metadata={"format": "poser-weights/1", "meta": "{not json"})
    with pytest.raises(PoserError, match="not JSON"):
        read_spec(path)


def test_inference_imports_no_training_data_synth_or_bench_code():
    code = ("import sys, numpy as np, poser; m = poser.load(); m(np.zeros((120, 90, 3), np.uint8)); "
            "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True).stdout.split()
    loaded = [m for m in out if m.startswith("poser.")]
    assert "poser.inference.predictor" in loaded
    banned = ("poser.train", "poser.data", "poser.synth", "poser.bench", "poser.evaluate", "poser.cli")
    assert not [m for m in loaded if m.startswith(banned)], loaded


# The house's floors, lowest first (../shared/architecture.md): a module imports only from rooms on
# floors below its own, never sideways, never up, never the package's front door (`poser`).
FLOORS = [
    {"version", "errors"},
    {"console", "files", "state_dicts", "device", "threads", "skeletons", "geometry"},
    {"codec", "imageio", "runs"},
    {"spec"},
    {"models"},
    {"runtime", "detect"},
    {"inference", "video", "data"},
    {"annotate", "api"},
    {"evaluate"},
    {"exporter", "train"},
    {"synth"},
    {"bench"},
    {"cli"},
    {"__main__"},
]


def _imports() -> list[tuple[str, str, str]]:
    """(module file, its room, the room it imports) for every poser import, at any depth."""
    import ast

    out = []
    for p in sorted((REPO / "poser").rglob("*.py")):
        rel = p.relative_to(REPO / "poser").with_suffix("")
        if str(rel) == "__init__":
            continue            # the front door imports its rooms lazily, on first use
        here = rel.parts[0]
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom) and n.module == "poser":      # `from poser import geometry`
                names = [f"poser.{a.name}" for a in n.names]
            else:
                names = [n.module] if isinstance(n, ast.ImportFrom) and n.module else \
                    [a.name for a in n.names] if isinstance(n, ast.Import) else []
            for name in names:
                if name == "poser" or name.startswith("poser."):
                    out.append((str(rel), here, name.split(".")[1] if "." in name else "poser"))
    return out


def test_every_import_runs_down_a_floor():
    floor = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}
    rooms = {p.stem if p.is_file() else p.name for p in (REPO / "poser").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert rooms <= floor.keys(), f"rooms without a floor: {sorted(rooms - floor.keys())}"
    up = [(f, there) for f, here, there in _imports() if here != there and (
        there == "poser" or floor[there] >= floor[here])]
    assert not up, f"imports sideways, up or of the front door: {up}"


def test_rooms_and_functions_stay_small():
    """No module over 400 lines; no function over 60 (a command's option declarations aside:
    its body counts)."""
    import ast

    big, long = [], []
    for p in sorted((REPO / "poser").rglob("*.py")):
        text = p.read_text()
        if len(text.splitlines()) > 400:
            big.append(p.name)
        for n in ast.walk(ast.parse(text)):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                start = n.body[0].lineno if p.parent.name == "cli" else n.lineno
                if n.end_lineno - start + 1 > 60:
                    long.append(f"{p.relative_to(REPO)}:{n.name}")
    assert not big and not long, (big, long)


def test_the_flip_test_is_the_models_own_default_and_the_option_overrides_it(synth_root, tmp_path):
    from typer.testing import CliRunner

    import poser
    from poser.cli import app
    from poser.exporter import export

    on, off, kept = (tmp_path / f"{n}.safetensors" for n in ("on", "off", "kept"))
    export(DEFAULT_WEIGHTS, on, flip_test=True)
    export(DEFAULT_WEIGHTS, off, flip_test=False)
    export(on, kept)                                      # an export keeps the source's choice
    assert (read_spec(on).first.flip_test, read_spec(off).first.flip_test, read_spec(kept).first.flip_test) == \
        (True, False, True)
    img, _, _ = one_person(seed=3, side=240)
    rgb, box = cv2.cvtColor(img, cv2.COLOR_BGR2RGB), np.array([[40.0, 20.0, 160.0, 210.0]])
    p_on, p_off = Predictor.from_file(on), Predictor.from_file(off)
    flipped, plain = p_off.predict_image(rgb, box, flip=True).keypoints, p_off.predict_image(rgb, box).keypoints
    assert np.abs(flipped - plain).max() > 0.5            # the flip test changes the answer
    assert np.allclose(p_on.predict_image(rgb, box).keypoints, flipped, atol=1e-3)
    assert np.allclose(p_on.predict_image(rgb, box, flip=False).keypoints, plain, atol=1e-3)
    model = poser.load(on)                                # its runtime (OpenVINO here): flip on by itself
    assert np.allclose(model(img, box).keypoints, model(img, box, flip=True).keypoints, atol=1e-3)
    assert not np.allclose(model(img, box).keypoints, model(img, box, flip=False).keypoints, atol=0.5)
    # eval says which it ran, and --no-flip turns the model's default off
    runner, protocols = CliRunner(), []
    for extra in ([], ["--no-flip"]):
        res = runner.invoke(app, ["eval", "--weights", str(on), "--data", str(synth_root), "--out", str(tmp_path),
                                  "--json", str(tmp_path / "r.json"), *extra])
        assert res.exit_code == 0, res.output
        protocols.append(json.loads((tmp_path / "r.json").read_text())["protocol"])
    assert protocols == ["ground-truth person boxes, flip test", "ground-truth person boxes"]
    with pytest.raises(PoserError, match="flip_test"):
        StageSpec.from_meta(_meta(flip_test="yes"))
