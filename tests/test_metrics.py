"""Metrics (poser/metrics.py): strict PCP and PDJ on hand-made poses."""

import numpy as np
import pytest

from poser.evaluate.metrics import pcp, pdj, score_reliability
from poser.skeletons import LSP14


def _lsp_pose() -> np.ndarray:
    """An upright LSP-14 figure (x, y, v=2)."""
    j = {n: i for i, n in enumerate(LSP14.joints)}
    gt = np.zeros((1, 14, 3))
    pos = {"right_ankle": (40, 300), "right_knee": (40, 230), "right_hip": (40, 160), "left_hip": (100, 160),
           "left_knee": (100, 230), "left_ankle": (100, 300), "right_wrist": (0, 160), "right_elbow": (20, 110),
           "right_shoulder": (40, 60), "left_shoulder": (100, 60), "left_elbow": (120, 110),
           "left_wrist": (140, 160), "neck": (70, 50), "head_top": (70, 0)}
    for n, xy in pos.items():
        gt[0, j[n]] = (*xy, 2)
    return gt


def test_pcp_and_pdj_hand_cases():
    gt = _lsp_pose()
    j = {n: i for i, n in enumerate(LSP14.joints)}
    pred = gt[..., :2].copy()
    # left shin (knee 230 -> ankle 300, length 70): move the ankle 31.5 px = 0.45 x length.
    pred[0, j["left_ankle"]] += (31.5, 0)
    r5, r4 = pcp(pred, gt, LSP14, 0.5), pcp(pred, gt, LSP14, 0.4)
    assert r5["per_kind"]["lower_leg"] == 1.0 and r4["per_kind"]["lower_leg"] == 0.5
    assert r5["mean"] == 1.0 and r4["mean"] == pytest.approx(7 / 8)
    # PDJ: torso diameter = |left shoulder (100,60) - right hip (40,160)| = 116.6 px.
    d = np.hypot(60, 100)
    assert 31.5 / d == pytest.approx(0.27, abs=0.005)
    res = pdj(pred, gt, LSP14)
    assert res["at_0.2"] == pytest.approx(13 / 14) and res["per_joint"]["left_ankle"] == 0.0
    assert res["curve"][res["fractions"].index(0.28)] == 1.0
    # An unlabelled joint is not counted, whatever the prediction.
    gt2 = gt.copy()
    gt2[0, j["left_ankle"], 2] = 0
    assert pdj(pred, gt2, LSP14)["at_0.2"] == 1.0 and pdj(pred, gt2, LSP14)["joints_counted"] == 13


def test_score_reliability_finds_the_score_above_which_joints_are_mostly_right():
    gt = np.repeat(_lsp_pose(), 40, axis=0)                     # 40 people, 560 joints; torso 116.6 px
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, (40, 14))
    pred = gt[..., :2].copy()
    # Joints scored under 0.1 are always wrong (50 px = 0.43 torso), those in 0.1-0.15 right 1 in 3,
    # everything from 0.15 right: the model's joints are more likely right than wrong from 0.15.
    wrong = (scores < 0.1) | ((scores < 0.15) & (rng.uniform(size=scores.shape) < 2 / 3))
    pred[wrong] += (50, 0)
    r = score_reliability(pred, scores, gt, LSP14)
    assert r["min_score"] == 0.15
    by = {b["from"]: b for b in r["bins"]}
    assert by[0.0]["right"] == 0.0 and by[0.6]["right"] == 1.0
    assert sum(b["joints"] for b in r["bins"]) == 560
    # A model right everywhere may draw every joint; NaN scores (no prediction) are not counted as right.
    assert score_reliability(gt[..., :2], scores, gt, LSP14)["min_score"] == 0.0
    scores[0] = np.nan
    assert sum(b["joints"] for b in score_reliability(gt[..., :2], scores, gt, LSP14)["bins"]) == 546
