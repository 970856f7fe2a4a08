"""The shipped model's keypoints on the real COCO sample photos, pinned: a refactor of the house
(runtimes, export, crops, decode) must give the same numbers. Torch fp32, 2 threads; the bound
(0.05 px) leaves room for another CPU's float sums, not for a changed crop or decode (px).

Remake the pins when the shipped model changes: `python tests/test_pinned_keypoints.py`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

PINS = Path(__file__).parent / "data" / "coco_sample_keypoints.json"
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "coco-sample"


def predict_sample(sample: Path) -> dict:
    """{image file: {"box", "flip"}}: the shipped model on each COCO person's box."""
    from poser.imageio import read_rgb
    from poser.inference.predictor import DEFAULT_WEIGHTS, Predictor

    torch.set_num_threads(2)
    ann = json.loads((sample / "person_keypoints_sample.json").read_text())
    p = Predictor.from_file(DEFAULT_WEIGHTS, runtime="torch")
    out = {}
    for im in ann["images"]:
        boxes = np.array([a["bbox"] for a in ann["annotations"] if a["image_id"] == im["id"]
                          and a.get("num_keypoints", 0) > 0 and not a.get("iscrowd")], np.float64)
        rgb = read_rgb(sample / im["file_name"])
        out[im["file_name"]] = {"box": p.predict_image(rgb, boxes, flip=False).keypoints.round(3).tolist(),
                                "flip": p.predict_image(rgb, boxes, flip=True).keypoints.round(3).tolist()}
    return out


def _weights_sha() -> str:
    from poser.inference.predictor import DEFAULT_WEIGHTS

    return hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest()[:16]


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/datasets/coco-sample is not here")
def test_the_shipped_models_keypoints_on_the_coco_sample_are_as_pinned():
    pins = json.loads(PINS.read_text())
    assert pins["weights_sha256"] == _weights_sha(), "the shipped model changed: remake the pins (module doc)"
    before = torch.get_num_threads()
    try:
        got = predict_sample(SAMPLE)
    finally:
        torch.set_num_threads(before)
    assert got.keys() == pins["images"].keys()
    for name, want in pins["images"].items():
        for k in ("box", "flip"):
            assert np.abs(np.array(got[name][k]) - np.array(want[k])).max() < 0.05, (name, k)


if __name__ == "__main__":
    PINS.write_text(json.dumps({"weights_sha256": _weights_sha(), "runtime": "torch/fp32, 2 threads",
                                "images": predict_sample(SAMPLE)}) + "\n")
    print(f"wrote {PINS}")
