"""Metrics (poser/metrics.py): strict PCP and PDJ on hand-made poses."""

import numpy as np
import pytest

from poser.evaluate.metrics import pcp, pdj
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
