"""The DeepPose cascade (Toshev & Szegedy 2014, section 3.2): stages 2..S refine every joint
from a sub-image centred on the previous stage's estimate of that joint.

A stage is the same regressor as stage one, on different crops: the sub-image of joint j is a
square of side `sigma` x the estimated pose's torso diameter, centred on the previous estimate
of j, and the stage regresses j's position in it (normalised crop coordinates, i.e. the
displacement normalised by the sub-image). One network serves all joints: it keeps the K-joint
output head, and for a crop around joint j only row j is trained and read. The paper trains
one network per joint; sharing the trunk gives each network K times more training crops, K
times fewer weights to ship, and runs all K crops of a person in one batch, while the output
row still tells the network which joint it refines.

Training a stage (its crops, the previous stages' error statistics) is train/stages.py.
"""

from __future__ import annotations

import numpy as np

from poser.skeletons import Skeleton

SUB_IMAGE = 1.5      # sigma: sub-image side in torso diameters of the estimated pose


def pose_diameter(coords: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(N,) torso diameter of estimated poses (N, K, 2): left shoulder to right hip, else the
    other diagonal, never less than a sixth of the pose's extent (a torso seen edge-on)."""
    diag = skeleton.torso_diagonals(coords).max(-1)
    extent = np.ptp(coords, axis=1).max(-1)
    return np.maximum(diag, extent / 6).clip(min=1e-3)


def joint_boxes(centres: np.ndarray, diameter: np.ndarray, sigma: float, margin: float) -> np.ndarray:
    """(..., 4) xywh boxes whose model crop (box grown by `margin`) is the sub-image of side
    sigma x diameter centred on each of `centres` (..., 2); diameter broadcasts (...,)."""
    side = np.asarray(diameter)[..., None] * sigma / margin
    return np.concatenate([centres - side / 2, np.broadcast_to(side, centres.shape)], -1)
