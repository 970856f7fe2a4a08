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

Training crops follow the paper: the centre is either the real previous-stage prediction for
that training image, or the true joint displaced by a sample from the empirical distribution
(per-joint mean and covariance, in torso diameters) of the previous stage's errors on the
training set, so every epoch sees new displacements.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class StageData:
    """What training stage s needs from stages 1..s-1 on the training set."""
    prev: np.ndarray        # (N, K, 2) real previous-stage predictions (cache pixels)
    diameter: np.ndarray    # (N,) their torso diameters
    mean: np.ndarray        # (K, 2) per-joint mean error / diameter
    cov: np.ndarray         # (K, 2, 2) per-joint covariance of error / diameter
    chol: np.ndarray        # (K, 2, 2) its Cholesky factors: a displacement is mean + chol @ N(0, I)


def error_statistics(prev: np.ndarray, gt: np.ndarray, skeleton: Skeleton) -> StageData:
    diam = pose_diameter(prev, skeleton)
    err = (prev - gt[..., :2]) / diam[:, None, None]
    k = skeleton.num_joints
    mean, cov = np.zeros((k, 2)), np.tile(np.eye(2) * 0.01, (k, 1, 1))
    for j in range(k):
        e = err[gt[:, j, 2] > 0, j]
        if len(e) >= 3:
            mean[j], cov[j] = e.mean(0), np.cov(e.T) + np.eye(2) * 1e-6
    return StageData(prev, diam, mean, cov, np.linalg.cholesky(cov))


def sample_crops(sd: StageData, idx: np.ndarray, gt: np.ndarray, sigma: float, margin: float,
                 rng: np.random.Generator, p_real: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """For training instances `idx` with ground truth gt (B, K, 3): one labelled joint each,
    a sub-image box around a simulated (or, with probability p_real, the real) previous
    estimate of it. Returns boxes (B, 4) and a one-hot joint mask (B, K)."""
    b, k = gt.shape[:2]
    lab = gt[..., 2] > 0
    p = np.where(lab.any(1)[:, None], lab, 1.0)
    cdf = np.cumsum(p, 1) / p.sum(1, keepdims=True)
    joint = np.minimum((rng.random((b, 1)) >= cdf).sum(1), k - 1)           # one labelled joint each
    diam = sd.diameter[idx]
    shift = sd.mean[joint] + np.einsum("bij,bj->bi", sd.chol[joint], rng.standard_normal((b, 2)))
    sim = gt[np.arange(b), joint, :2] + diam[:, None] * shift
    real = sd.prev[idx, joint]
    centre = np.where((rng.random(b) < p_real)[:, None], real, sim)
    mask = np.zeros((b, k))
    mask[np.arange(b), joint] = 1.0
    return joint_boxes(centre, diam, sigma, margin), mask
