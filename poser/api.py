"""The Python API: `poser.load()` -> a `PoseModel`; calling it on an image returns `Poses`.

    import cv2, poser
    model = poser.load()                        # the shipped model, on CUDA when there is one
    poses = model(cv2.imread("photo.jpg"))      # OpenCV's BGR; rgb=True for RGB arrays
    print(poses.keypoints, poses.scores)        # (N, K, 2) pixels, (N, K) in [0, 1]

Boxes are optional: without them a detector finds the people (`load(detector=...)`), else
the person search finds one person, exactly as `poser annotate` does.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from poser.detect.boxes import check_boxes, select
from poser.errors import PoserError
from poser.imageio import read_rgb
from poser.inference.assemble import load_detector, load_predictor
from poser.inference.poses import Poses
from poser.inference.predictor import Predictor
from poser.inference.search import SEARCH_PASSES


class PoseModel:
    """A loaded pose model (and optionally a person detector). `model(image)` -> Poses."""

    def __init__(self, predictor: Predictor, detector=None, person_threshold: float = 0.5,
                 max_people: int = 20) -> None:
        self.predictor, self.detector = predictor, detector
        self.person_threshold, self.max_people = person_threshold, max_people

    @property
    def skeleton(self):
        return self.predictor.skeleton

    def __call__(self, image: np.ndarray | str | Path, boxes: np.ndarray | None = None, *, rgb: bool = False,
                 flip: bool | None = None, search: int = SEARCH_PASSES) -> Poses:
        """Poses in `image`: a path, or an (H, W, 3) uint8 array in BGR (as cv2.imread gives;
        `rgb=True` for RGB, as PIL and most other libraries give). `boxes` (N, 4) xywh person
        boxes; without them the detector (if loaded) or the person search (one person). `flip`:
        the flip test (average with the mirrored crop); None: the model's own default (on for the
        shipped models)."""
        img = self._rgb(image, rgb)
        if not isinstance(search, int) or isinstance(search, bool) or search < 0:
            raise PoserError(f"search: passes after the whole-image one, an integer >= 0; got {search!r}")
        if boxes is not None:
            boxes = check_boxes(boxes)           # the --boxes reader's rules
            return Poses.from_prediction(self.predictor.predict_image(img, boxes, flip), self.skeleton)
        if self.detector is not None:
            b, scores = select(self.detector([img])[0], self.person_threshold, self.max_people)
            return Poses.from_prediction(self.predictor.predict_image(img, b, flip), self.skeleton, scores)
        return Poses.from_prediction(self.predictor.find_person([img], search, flip)[0], self.skeleton)

    @staticmethod
    def _rgb(image: np.ndarray | str | Path, rgb: bool) -> np.ndarray:
        if isinstance(image, str | Path):
            img = read_rgb(Path(image))
            if img is None:
                raise PoserError(f"{image}: not a readable image")
            return img
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
            raise PoserError(f"expected an (H, W, 3) uint8 image, H and W >= 1; got {img.dtype} {img.shape}")
        return np.ascontiguousarray(img) if rgb else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load(weights: str | Path | None = None, device: str = "auto", *, stages: int | None = None,
         detector: str | None = None, detector_weights: str | Path | None = None,
         person_threshold: float = 0.5, max_people: int = 20, runtime: str = "auto",
         precision: str = "auto") -> PoseModel:
    """A pose model from a weights file (default: the shipped reference model) on `device`
    ('auto': CUDA when available), with a person detector from `poser.detect.detectors` if named."""
    predictor = load_predictor(weights, device, stages, runtime, precision)
    det = load_detector(detector, detector_weights, predictor.device, person_threshold)
    return PoseModel(predictor, det, person_threshold, max_people)
