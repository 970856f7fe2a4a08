"""Shared fixtures: a small synthetic COCO-format dataset, and the real samples in ../shared
(tests that need them skip with a reason when the folder is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from poser.data.synth import SynthConfig, generate

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
