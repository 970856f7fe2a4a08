"""Shared fixtures: a small synthetic COCO-format dataset, and the real samples in ../shared
(tests that need them skip with a reason when the folder is absent)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from poser.synth.dataset import SynthConfig, generate

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
COCO_SAMPLE = SHARED / "coco-sample"
LSPET = SHARED / "lspet"


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """40 synthetic images (32 train, 8 val), seed 0, made once per test session."""
    root = tmp_path_factory.mktemp("synth") / "ds"
    generate(root, SynthConfig(images=40, seed=0))
    return root


@pytest.fixture
def coco_sample() -> Path:
    if not (COCO_SAMPLE / "person_keypoints_sample.json").is_file():
        pytest.skip(f"real COCO sample not present at {COCO_SAMPLE}")
    return COCO_SAMPLE


@pytest.fixture
def lspet() -> Path:
    if not (LSPET / "joints.mat").is_file():
        pytest.skip(f"real LSPET data not present at {LSPET}")
    return LSPET


def make_lsp_folder(tmp_path: Path, layout: str, n: int = 5):
    """A tiny LSP (3x14xN, occlusion flags) or LSPET (14x3xN, visibility flags) folder."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(10, 90, (n, 14, 2))
    flag = (rng.random((n, 14)) < 0.3).astype(float)
    (tmp_path / "images").mkdir()
    digits = 4 if layout == "lsp" else 5
    for i in range(n):
        cv2.imwrite(str(tmp_path / "images" / f"im{i + 1:0{digits}d}.jpg"), np.zeros((100, 120 + i, 3), np.uint8))
    if layout == "lspet":
        xy[flag == 0] = [0.0, -26.1]                      # LSPET stores no position for invisible joints
        joints = np.concatenate([xy, flag[..., None]], -1).transpose(1, 2, 0)   # 14 x 3 x N
    else:
        joints = np.concatenate([xy, flag[..., None]], -1).transpose(2, 1, 0)   # 3 x 14 x N
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": joints})
    return xy, flag


@pytest.fixture(scope="session")
def learn_root(tmp_path_factory) -> Path:
    """A synthetic dataset big enough to learn from (2,700 train / 300 val images, no
    clutter): made once per session, shared by the tests that train."""
    root = tmp_path_factory.mktemp("learn") / "ds"
    generate(root, SynthConfig(images=3000, seed=1, val_fraction=0.1, clutter=0.0))
    return root


@pytest.fixture(scope="session")
def trained_run(learn_root, tmp_path_factory) -> Path:
    """A stage-1 model (the default integral head, with loose crops) trained on `learn_root`
    on the CPU for about 90 s (seeded)."""
    from poser.train.augment import Augment
    from poser.train.config import TrainConfig
    from poser.train.loop import fit

    cfg = TrainConfig(data=str(learn_root), out=str(tmp_path_factory.mktemp("runs")), name="learn",
                      backbone="mobilenet_v3_small", input_size=96, head="integral", epochs=8,
                      batch_size=32, workers=0, device="cpu", seed=0, aug=Augment(flip=0.0))
    return Path(fit(cfg)["run"])


# Tests that train on synthetic data (directly or through these fixtures), spawn DDP processes,
# run the demo or read the real LSPET photos take minutes: marked slow, so that
# `pytest -m "not slow"` is the quick subset. CI runs everything.
_SLOW_FIXTURES = {"trained_run", "learn_root", "lspet"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
