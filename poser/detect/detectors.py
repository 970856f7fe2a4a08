"""Person detectors: torchvision's COCO detectors behind one door, `create_detector`.

A detector turns whole images into person boxes in the `--boxes` format (COCO detection
results: `{"bbox": [x, y, w, h], "score": s, "category_id": 1}`), and those go through the same
reader and filters as a `--boxes` file (`poser.detect.boxes.select`), so a run with a
detector and a run with its saved boxes see the same people.

Weights: torchvision's COCO weights, fetched once into torch's cache (`$TORCH_HOME/hub/
checkpoints`, as `--pretrained imagenet` does), or a local state dict (`--detector-weights`,
.safetensors or .pth read tensors-only).
"""

from __future__ import annotations

import contextlib
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from poser.errors import PoserError
from poser.state_dicts import read_state_dict
from poser.threads import sync_torch

PERSON = 1                      # COCO category id of a person (torchvision's label 1)


@dataclass(frozen=True)
class DetectorSpec:
    builder: str                # torchvision.models.detection function
    weights: str                # its COCO weights enum
    note: str


DETECTORS: dict[str, DetectorSpec] = {
    "fasterrcnn_mobilenet_v3_large_fpn": DetectorSpec(
        "fasterrcnn_mobilenet_v3_large_fpn", "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
        "fast default: COCO box AP 32.8, 800 px"),
    "fasterrcnn_mobilenet_v3_large_320_fpn": DetectorSpec(
        "fasterrcnn_mobilenet_v3_large_320_fpn", "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
        "fastest: COCO box AP 22.8, 320 px; large people only"),
    "ssdlite320_mobilenet_v3_large": DetectorSpec(
        "ssdlite320_mobilenet_v3_large", "SSDLite320_MobileNet_V3_Large_Weights",
        "single shot: COCO box AP 21.3, 320 px"),
    "fasterrcnn_resnet50_fpn_v2": DetectorSpec(
        "fasterrcnn_resnet50_fpn_v2", "FasterRCNN_ResNet50_FPN_V2_Weights",
        "accurate: COCO box AP 46.7, 800 px; slow on a CPU"),
}
DEFAULT_DETECTOR = "fasterrcnn_mobilenet_v3_large_fpn"         # `--detector auto` on a GPU
CPU_DETECTOR = "ssdlite320_mobilenet_v3_large"                 # ... on a CPU (measured: docs, bench detect)
DOWNLOAD_TIMEOUT = 30.0         # s without a byte before a fetch gives up (offline must not hang)


def build_detector(name: str) -> nn.Module:
    """The architecture of detector `name` with random weights (nothing is fetched)."""
    spec = _spec(name)
    fn = getattr(torchvision.models.detection, spec.builder)
    return fn(weights=None, weights_backbone=None, num_classes=91)


def weights_url(name: str) -> str:
    return getattr(torchvision.models.detection, _spec(name).weights).COCO_V1.url


def cached_weights_path(name: str) -> Path:
    """Where torch's cache keeps (or would keep) the COCO weights of detector `name`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights_url(name)).name


def resolve_detector(name: str, device: str | torch.device = "cpu") -> str:
    """A detector name; 'auto' is the default for the device: on a CPU the fastest measured
    (`poser bench --only detect`, docs/runtimes.md), on a GPU the 800 px Faster R-CNN (it finds small
    people the 320 px detectors miss)."""
    if name == "auto":
        return DEFAULT_DETECTOR if torch.device(device).type == "cuda" else CPU_DETECTOR
    _spec(name)
    return name


def _spec(name: str) -> DetectorSpec:
    if name not in DETECTORS:
        raise PoserError(f"unknown detector {name!r} (known: auto, {', '.join(DETECTORS)})")
    return DETECTORS[name]


def _state(name: str, weights: str | Path | None, fetching: bool = False) -> dict[str, torch.Tensor]:
    if weights is not None:
        return read_state_dict(Path(weights), "--detector-weights")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:   # reads the cache if the file is there, else downloads it (hash-checked) into the cache
        with contextlib.redirect_stdout(sys.stderr):    # torch.hub says "Downloading: ..." on stdout
            return torch.hub.load_state_dict_from_url(weights_url(name), map_location="cpu", progress=False,
                                                      check_hash=True, weights_only=True)
    except Exception as e:
        cached = cached_weights_path(name)
        if cached.is_file():        # there, but unreadable: a cut download, another file copied over it
            raise PoserError(f"detector {name}: its cached COCO weights {cached} cannot be read ({type(e).__name__}: "
                             f"{str(e)[:120]}); delete that file and run again to fetch them anew, or give "
                             "`detector_weights` FILE") from None
        where = cached_weights_path(name)
        elsewhere = "" if fetching else f" (poser fetch-detector {name} on a machine that is online)"
        raise PoserError(f"detector {name}: offline and not cached ({type(e).__name__}): copy {where.name}{elsewhere} "
                         f"to {where.parent}/, or give `detector_weights` FILE, or `boxes`") from None
    finally:
        socket.setdefaulttimeout(old)


class PersonDetector:
    """A torchvision detector that keeps people. Call it on RGB uint8 images (H, W, 3); each
    image gets a list of detections in the `--boxes` format, best first (not yet thresholded:
    `poser.detect.boxes.select` does that, for files and detectors alike)."""

    def __init__(self, name: str, model: nn.Module, device: str | torch.device = "cpu",
                 min_score: float = 0.05) -> None:
        self.name, self.device = name, torch.device(device)
        self.model = model.to(self.device).eval()
        # The model's own score floor: below it a box is never returned. Our threshold sits on top.
        if hasattr(self.model, "roi_heads"):
            self.model.roi_heads.score_thresh = min_score
        else:
            self.model.score_thresh = min_score

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> list[list[dict]]:
        if not images:
            return []
        batch = [torch.from_numpy(np.ascontiguousarray(im)).to(self.device).permute(2, 0, 1).float() / 255
                 for im in images]
        out = []
        for det in self.model(batch):
            keep = det["labels"] == PERSON
            boxes, scores = det["boxes"][keep].cpu().numpy(), det["scores"][keep].cpu().numpy()
            order = np.argsort(-scores, kind="stable")
            out.append([{"bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                         "score": float(s), "category_id": PERSON}
                        for b, s in zip(boxes[order], scores[order], strict=True)])
        return out


def fetch_weights(name: str) -> Path:
    """Detector `name`'s COCO weights in torch's cache (fetched if missing): their path."""
    name = resolve_detector(name)
    _state(name, None, fetching=True)
    return cached_weights_path(name)


def create_detector(name: str, weights: str | Path | None = None, device: str | torch.device = "cpu",
                    min_score: float = 0.05) -> PersonDetector:
    """Detector `name` ('auto': `resolve_detector`) with torchvision's COCO weights (cached or
    fetched once) or a local file."""
    sync_torch()                # the command's thread count, chosen before torch was loaded
    name = resolve_detector(name, device)
    model = build_detector(name)
    state = _state(name, weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        src = weights or cached_weights_path(name)
        raise PoserError(f"{src}: not weights of detector {name} ({str(e).splitlines()[0]})") from None
    return PersonDetector(name, model, device, min_score)
