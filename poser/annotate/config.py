"""What an annotate run is asked (`AnnotateConfig`) and what it did (`Result`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from poser.inference.poses import MIN_SCORE
from poser.inference.search import SEARCH_PASSES

DETECT_EVERY = 10       # video frames between detector runs (a guess: not yet measured on real footage)


@dataclass
class AnnotateConfig:
    inputs: list[str]
    weights: str | None = None          # None: the shipped model
    device: str = "auto"
    stages: int | None = None           # cascade: run only the first N stages
    out: str | None = None              # the output folder; None: runs/annotate/<name>
    name: str | None = None             # ... exp1, exp2, ... when None
    boxes: str | None = None            # COCO-style detections: [{bbox, score, file_name | image_id}]
    person_threshold: float = 0.5       # detections (file or detector) below are dropped
    detector: str | None = None         # a built-in person detector (poser.detect.detectors)
    detector_weights: str | None = None
    max_people: int = 20                # per image or frame, best first
    detect_every: int = DETECT_EVERY    # video: detector every N frames (and when a track is lost)
    save_boxes: str | None = None       # write the boxes used (the detector's) in the --boxes format
    min_score: float = MIN_SCORE        # joints below are not drawn, nor visible in the JSON
    smooth: bool = False                # One-Euro filter on video keypoints
    flip: bool | None = None            # the flip test; None: the model's own default
    batch_size: int = 16
    draw: bool = True                   # write annotated copies (JSON is always written)
    search_passes: int = SEARCH_PASSES  # without boxes: person-search passes after the whole-image one
    runtime: str = "auto"               # what runs the network (runtime/choice.py)
    precision: str = "auto"


@dataclass
class Result:
    out: Path | None = None             # the output folder
    records: list[dict] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)     # annotated, but with a caveat
    frames: int = 0
    seconds: float = 0.0
