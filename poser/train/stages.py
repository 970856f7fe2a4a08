"""Training cascade stages 2..S (the sub-images themselves are inference/cascade.py).

Stages 1..s-1 come from `--from` (a run folder or weights file) and run once over the training
set (`predict_previous`); `init_from` starts stage one itself from a poser weights file.

Training crops follow the paper: the centre is either the real previous-stage prediction for
that training image, or the true joint displaced by a sample from the empirical distribution
(per-joint mean and covariance, in torso diameters) of the previous stage's errors on the
training set, so every epoch sees new displacements.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from poser.console import progress
from poser.data.cache import Cache
from poser.errors import PoserError
from poser.inference.cascade import joint_boxes, pose_diameter
from poser.inference.predictor import Predictor
from poser.models.deeppose import load_stages
from poser.models.weights import map_joint_rows, read_spec
from poser.skeletons import VISIBILITY_STAND_INS, Skeleton
from poser.train.config import TrainConfig, loss_kind

if TYPE_CHECKING:
    import torch

    from poser.models.deeppose import DeepPose


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


def stage_weights(from_run: str | Path, stage: int) -> Path:
    """The weights file of stages 1..stage-1: `from_run` itself, or its best.safetensors."""
    path = Path(from_run)
    weights = path / "best.safetensors" if path.is_dir() else path
    if not weights.is_file():
        raise PoserError(f"`from_run` {path}: no stage-{stage - 1} model there (expected {weights})")
    return weights


def stage_architecture(from_run: str | Path, stage: int) -> dict:
    """Backbone, input size and head of stage one, which refinement stages copy by default."""
    first = read_spec(stage_weights(from_run, stage)).first
    return {"backbone": first.backbone, "input_size": first.input_size, "head": first.head}


def previous_stages(cfg: TrainConfig, device: torch.device, skeleton) -> list[tuple[DeepPose, dict]]:
    """Stages 1..stage-1 that a refinement stage trains on top of (from --from)."""
    path = Path(cfg.from_run)
    stages = load_stages(stage_weights(path, cfg.stage), device)
    if len(stages) != cfg.stage - 1:
        raise PoserError(f"`from_run` {path} holds a {len(stages)}-stage model; `stage` {cfg.stage} builds on "
                         f"{cfg.stage - 1} stage(s)")
    if stages[0][1].skeleton != skeleton.name:
        raise PoserError(f"`from_run` {path} predicts {stages[0][1].skeleton} joints, the data is {skeleton.name}")
    for m, _ in stages:
        m.requires_grad_(False)
    return stages


def init_from(model: DeepPose, cfg: TrainConfig, skeleton: Skeleton) -> None:
    """Fine-tuning: start the whole model (backbone and head) from stage one of a poser weights
    file of the same backbone and head; the input size may differ (the network is convolutional
    and the head's heatmap follows the input). With other joints (an integral head), each joint
    both share starts from the file's, the others keep their start (BlazePose's own channel for
    the nose with `pretrained` mediapipe)."""
    src, spec = load_stages(Path(cfg.init), "cpu", 1)[0]
    want = {"backbone": cfg.backbone, "head": cfg.head, "sigma_head": loss_kind(cfg) == "rle"}
    have = {"backbone": spec.backbone, "head": spec.head, "sigma_head": spec.sigma_head}
    diff = [f"{k} {have[k]} (this run: {want[k]})" for k in want if have[k] != want[k]]
    if spec.skeleton != skeleton.name and cfg.head != "integral":
        diff.append(f"skeleton {spec.skeleton} (this run: {skeleton.name}; only the integral head maps joints)")
    if diff:
        raise PoserError(f"`init` {cfg.init} does not fit this run: {', '.join(diff)}")
    state = src.state_dict()
    if spec.skeleton != skeleton.name:
        # A joint the file lacks keeps its start, but its visibility output takes a stand-in's
        # (the data may never label that joint's visibility: the face's from the head top).
        state = map_joint_rows(state, model.state_dict(), spec.joints, skeleton.joints, VISIBILITY_STAND_INS)
    model.load_state_dict(state)


def predict_previous(prev: list, cache: Cache, device: torch.device, batch_size: int, show: bool) -> StageData:
    """Run stages 1..s-1 over the training set once: their real predictions and the
    statistics of their errors, from which stage s draws its training sub-images."""
    predictor = Predictor(prev, device)
    with progress("instances") as bar:
        task = bar.add_task(f"stage 1-{len(prev)} on train", total=len(cache), visible=show)
        p = predictor.predict_cache(cache, False, batch_size=batch_size, progress=lambda k: bar.advance(task, k))
    return error_statistics(p.keypoints, cache.keypoints, cache.skeleton)
