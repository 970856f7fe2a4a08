"""`Prediction`: what the Predictor returns for N person boxes, typed.

Shapes: N people, K joints, S cascade stages. Coordinates in the source image's pixels (or,
for a prepared cache, its crop pixels). `Poses` (the public result) is built from one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Prediction:
    keypoints: np.ndarray       # (N, K, 2) px: the last stage's estimate
    scores: np.ndarray          # (N, K) in [0, 1], as the decode defines it (codec.py)
    in_crop: np.ndarray         # (N, K) probability that the joint lies inside its crop
    stages: np.ndarray          # (N, S, K, 2) px: the estimate after each stage
    boxes: np.ndarray           # (N, 4) xywh: the person box each crop came from

    def __len__(self) -> int:
        return len(self.keypoints)

    @classmethod
    def empty(cls, joints: int, stages: int) -> Prediction:
        return cls(np.zeros((0, joints, 2)), np.zeros((0, joints)), np.zeros((0, joints)),
                   np.zeros((0, stages, joints, 2)), np.zeros((0, 4)))

    @classmethod
    def concat(cls, parts: list[Prediction]) -> Prediction:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))

    def split(self, counts: list[int]) -> list[Prediction]:
        """Consecutive pieces of counts[i] people each (one per image)."""
        cuts = np.cumsum(counts)[:-1]
        pieces = [np.split(getattr(self, f), cuts) for f in _FIELDS]
        return [Prediction(*p) for p in zip(*pieces, strict=True)]

    def with_keypoints(self, keypoints: np.ndarray) -> Prediction:
        """The same prediction with other final keypoints (e.g. smoothed over video frames)."""
        return replace(self, keypoints=keypoints)


_FIELDS = ("keypoints", "scores", "in_crop", "stages", "boxes")
