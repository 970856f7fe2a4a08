"""Training cascade stages 2..S (the sub-images themselves are inference/cascade.py).

Training crops follow the paper: the centre is either the real previous-stage prediction for
that training image, or the true joint displaced by a sample from the empirical distribution
(per-joint mean and covariance, in torso diameters) of the previous stage's errors on the
training set, so every epoch sees new displacements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poser.inference.cascade import joint_boxes, pose_diameter
from poser.skeletons import Skeleton


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
