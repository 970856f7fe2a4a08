"""What an evaluation is asked (`EvalConfig`), the split it scores (`Split`) and what was predicted
(`Predicted`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poser.data.cache import Cache
from poser.inference.search import SEARCH_PASSES
from poser.skeletons import Skeleton


@dataclass
class EvalConfig:
    data: str | None = None             # None: the dataset of the model's skeleton (with_defaults)
    weights: str | None = None
    split: str = "val"
    flip: bool | None = None            # the flip test; None: the model's own default
    pcp_threshold: float = 0.5
    boxes: str | None = None            # COCO detection results: [{image_id, bbox, score}, ...]
    person_threshold: float = 0.0       # detections below are dropped
    detector: str | None = None         # a built-in person detector (poser.detect.detectors) instead of --boxes
    detector_weights: str | None = None
    max_people: int = 100               # detections per image, best first
    predictions: str | None = None      # score these (COCO keypoint results) instead of a model
    out: str = "runs/eval"
    name: str | None = None
    device: str = "auto"
    runtime: str = "auto"               # what runs the network (runtime/choice.py)
    precision: str = "auto"
    batch_size: int = 64
    limit: int | None = None            # first N instances only (quick checks)
    stages: int | None = None           # cascade: run only the first N stages
    whole_image: bool = False           # no boxes: the person search from each whole photo
    cache: str | None = None            # the prepared crops' folder (default: <data>/cache; for read-only data)
    search_passes: int = SEARCH_PASSES  # ... with this many passes after the whole-image one


@dataclass
class Split:
    """The evaluated split: its prepared cache and ground truth (image pixels), first n persons."""
    root: Path
    cache: Cache
    gt: np.ndarray                  # (N, K, 3)
    ids: np.ndarray                 # (N,) image ids
    ann_file: Path | None           # COCO-17 annotation file, for COCO AP
    sigmas: np.ndarray              # OKS sigmas
    skeleton: Skeleton              # the model's joints (gt is converted to them: the data's others are not scored)


@dataclass
class Predicted:
    """One prediction per ground-truth person (image pixels; NaN where none), as COCO results too."""
    keypoints: np.ndarray           # (N, K, 2)
    scores: np.ndarray              # (N, K)
    results: list[dict]
    stages: np.ndarray | None = None    # (N, S, K, 2) for a cascade with ground-truth boxes
    matching: dict | None = None        # saved or searched predictions: how many matched (match_predictions)
