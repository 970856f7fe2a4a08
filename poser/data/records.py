"""The one in-memory table of person instances that every dataset reader emits.

Shapes: N instances, M images, K joints. Columnar numpy arrays rather than a list of
objects, so 150k COCO instances index, filter and cache without Python loops.
Visibility uses COCO's flags everywhere: 0 = not labelled, 1 = labelled but occluded,
2 = labelled and visible.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poser.skeletons import Skeleton


@dataclass
class Instances:
    skeleton: Skeleton
    image_root: Path
    files: list[str]            # (M,) image paths relative to image_root
    image_ids: np.ndarray       # (M,) int64, the dataset's own ids
    image_sizes: np.ndarray     # (M, 2) int32 width, height
    image_index: np.ndarray     # (N,) int32 row into files / image_ids
    boxes: np.ndarray           # (N, 4) float32 xywh person boxes in image pixels
    keypoints: np.ndarray       # (N, K, 3) float32 x, y, visibility flag
    ann_ids: np.ndarray         # (N,) int64, annotation id (or instance number)
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def __post_init__(self) -> None:
        n, k = len(self.image_index), self.skeleton.num_joints
        assert self.boxes.shape == (n, 4), self.boxes.shape
        assert self.keypoints.shape == (n, k, 3), self.keypoints.shape
        assert self.ann_ids.shape == (n,)
        assert len(self.files) == len(self.image_ids) == len(self.image_sizes)

    def __len__(self) -> int:
        return len(self.image_index)

    @property
    def num_images(self) -> int:
        return len(self.files)

    def path(self, i: int) -> Path:
        """Image path of instance i."""
        return self.image_root / self.files[self.image_index[i]]

    def summary(self) -> dict:
        """Counts a user wants to see after loading: kept, skipped per reason."""
        vis = self.keypoints[..., 2]
        return {
            "skeleton": self.skeleton.name,
            "images": int(len(np.unique(self.image_index))),
            "instances": len(self),
            "labelled_joints": int((vis > 0).sum()),
            "visible_joints": int((vis == 2).sum()),
            "skipped": dict(sorted(self.skipped.items())),
        }
