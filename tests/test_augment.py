"""Everyday-photo augmentation (train/augment.py): occluders, frame-edge cuts, degraded images,
sticks held at the wrists, a second person beside the labelled one."""

from __future__ import annotations

import numpy as np
import torch

from poser.skeletons import COCO17
from poser.train.augment import _crowd, _degrade, _occlude, _sticks, _truncate


def _batch(n: int = 8, s: int = 64):
    x = torch.rand(n, 3, s, s) * 0.5 + 0.25          # nothing black: black pixels come from the cut
    kp = np.random.default_rng(0).uniform(-0.45, 0.45, (n, COCO17.num_joints, 2))
    return x, kp, np.ones((n, COCO17.num_joints), bool)


def test_truncation_blacks_out_beyond_an_edge_and_unlabels_the_joints_there():
    x, kp, has = _batch()
    _truncate(x, kp, has, 1.0, np.random.default_rng(1))
    for i in range(len(x)):
        black = (x[i] == 0).all(0)                     # (S, S)
        cols, rows = black.all(0), black.all(1)
        assert cols.any() or rows.any()                # a whole band of columns or rows is cut
        s = x.shape[-1]
        centre = (kp[i] + 0.5) * s
        px = np.clip(centre.astype(int), 0, s - 1)
        in_cut = black[px[:, 1], px[:, 0]].numpy()
        assert not (has[i] & in_cut).any()             # no labelled joint in the black band
        assert has[i].sum() >= 1 or in_cut.all()


def test_occluders_cover_joints_but_keep_their_labels():
    x, kp, has = _batch()
    before = x.clone()
    _occlude(x, kp, has, 1.0, np.random.default_rng(2))
    changed = (x != before).any(1)                     # (N, S, S)
    assert changed.flatten(1).any(1).all()             # every crop got an occluder
    assert 0.01 < changed.float().mean() < 0.5 and has.all()


def test_a_crowd_puts_the_next_crop_beside_the_centre_and_leaves_the_centre_alone():
    n, s = 4, 64
    x = (torch.arange(n, dtype=torch.float32) / 10 + 0.1).view(n, 1, 1, 1).expand(n, 3, s, s).clone()
    _crowd(x, 1.0, np.random.default_rng(5))
    for i in range(n):
        own, donor = 0.1 + i / 10, 0.1 + ((i + 1) % n) / 10
        changed = (x[i] != own).any(0)                                    # (S, S)
        cols = np.flatnonzero(changed.any(0).numpy())
        assert len(cols) and (cols.max() < s * 0.41 or cols.min() > s * 0.59)   # one side, never the centre
        lo, hi = min(own, donor), max(own, donor)
        assert x[i].min() >= lo - 1e-6 and x[i].max() <= hi + 1e-6    # a blend of the two people only
        moved = x[i][0][changed] - own
        assert (torch.sign(moved) == np.sign(donor - own)).all()     # towards the newcomer (crop i + 1)
    same = (torch.arange(n, dtype=torch.float32) / 10 + 0.1).view(n, 1, 1, 1).expand(n, 3, s, s).clone()
    before = same.clone()
    _crowd(same, 0.0, np.random.default_rng(5))
    assert torch.equal(same, before)


def test_degradation_stays_an_image_and_zero_probability_changes_nothing():
    x, kp, has = _batch()
    out = _degrade(x.clone(), 1.0, np.random.default_rng(3))
    assert out.min() >= 0 and out.max() <= 1 and (out != x).any(1).flatten(1).any(1).all()
    same = _degrade(x.clone(), 0.0, np.random.default_rng(3))
    assert torch.equal(same, x)


def test_a_stick_starts_at_a_labelled_wrist_and_the_labels_stay():
    x, kp, has = _batch(s=96)
    wrists = [COCO17.index("left_wrist"), COCO17.index("right_wrist")]
    has[:, wrists[1]] = False                          # only the left wrist is labelled: sticks start there
    labels, before = kp.copy(), x.clone()
    _sticks(x, kp, has, COCO17, 1.0, np.random.default_rng(4))
    changed = (x != before).any(1)                     # (N, S, S)
    assert np.array_equal(kp, labels) and has[:, wrists[0]].all()
    for i in range(len(x)):
        ys, xs = np.nonzero(changed[i].numpy())
        assert len(xs) > 0.2 * 96                      # at least a stick's length of pixels painted
        hand = (kp[i, wrists[0]] + 0.5) * 96
        near = np.hypot(xs - hand[0], ys - hand[1]).min()
        assert near < 4 or not ((hand >= 0) & (hand < 96)).all()   # it touches the hand (when in the crop)
    assert changed.float().mean() < 0.2                # thin: a stick, not a patch
    untouched = x.clone()
    _sticks(untouched, kp, has, COCO17, 0.0, np.random.default_rng(4))
    assert torch.equal(untouched, x)


def test_half_the_sticks_carry_on_the_forearm():
    """A skier's pole goes on from the forearm: half the sticks follow elbow -> wrist (25 degrees
    either way), so their pixels lie ahead of the hand along the forearm far more often than a
    stick pointing anywhere would (a quarter of directions lie within 45 degrees)."""
    n, s = 64, 96
    x = torch.full((n, 3, s, s), 0.5)
    kp = np.zeros((n, COCO17.num_joints, 2))
    rng = np.random.default_rng(0)
    w, e = COCO17.index("left_wrist"), COCO17.index("left_elbow")
    fore = rng.normal(size=(n, 2))
    fore /= np.linalg.norm(fore, axis=1, keepdims=True)
    kp[:, e] = -0.15 * fore                                      # elbow behind, wrist at the centre
    has = np.zeros((n, COCO17.num_joints), bool)
    has[:, [w, e]] = True
    before = x.clone()
    _sticks(x, kp, has, COCO17, 1.0, np.random.default_rng(5))
    along = []
    for i in range(n):
        ys, xs = np.nonzero((x[i] != before[i]).any(0).numpy())
        far = np.hypot(xs - s / 2, ys - s / 2) > 10              # the shaft, away from the hand
        d = np.stack([xs[far] - s / 2, ys[far] - s / 2], 1)
        d = d.mean(0) / np.linalg.norm(d.mean(0))
        along.append(d @ fore[i] > np.cos(np.deg2rad(45)))
    assert 0.45 < np.mean(along) < 0.9
