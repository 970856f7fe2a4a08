import numpy as np
import pytest

from poser.errors import PoserError
from poser.skeletons import COCO17, LSP14, get_skeleton


def test_coco17_matches_coco_order_and_oks_sigmas():
    assert COCO17.joints[:3] == ("nose", "left_eye", "right_eye")
    assert COCO17.joints[-1] == "right_ankle" and COCO17.num_joints == 17
    # pycocotools' sigmas, in COCO order (../shared/reference.md).
    assert COCO17.sigmas == (.026, .025, .025, .035, .035, .079, .079, .072, .072,
                             .062, .062, .107, .107, .087, .087, .089, .089)


def test_lsp14_order_is_the_datasets():
    assert LSP14.joints == (
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
        "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
        "left_wrist", "neck", "head_top")
    assert len(LSP14.sigmas) == 14


@pytest.mark.parametrize("sk", [COCO17, LSP14])
def test_flip_pairs_swap_left_and_right(sk):
    perm = sk.flip_index
    assert sorted(perm) == list(range(sk.num_joints))
    assert (perm[perm] == np.arange(sk.num_joints)).all()        # an involution
    for i, j in enumerate(perm):
        a, b = sk.joints[i], sk.joints[j]
        if a.startswith("left_"):
            assert b == "right_" + a[5:]
        elif not a.startswith("right_"):
            assert i == j                                          # centre joints stay
    assert len(sk.flip_pairs) == {17: 6 + 2, 14: 6}[sk.num_joints]


@pytest.mark.parametrize("sk", [COCO17, LSP14])
def test_limbs_and_torso_refer_to_real_joints(sk):
    k = sk.num_joints
    for a, b in sk.draw_limbs:
        assert 0 <= a < k and 0 <= b < k and a != b
    kinds = {limb.kind for limb in sk.pcp_limbs}
    assert {"upper_arm", "lower_arm", "upper_leg", "lower_leg", "torso"} <= kinds
    for limb in sk.pcp_limbs:
        if limb.kind != "torso" and limb.kind != "head":               # one left, one right limb each
            assert sk.flip_index[limb.a] != limb.a
    assert sk.joints[sk.torso[0]] == "left_shoulder" and sk.joints[sk.torso[1]] == "right_hip"
    assert sk.sides.count("L") == sk.sides.count("R") == 6 + (2 if k == 17 else 0)


def test_get_skeleton():
    assert get_skeleton("lsp14") is LSP14
    with pytest.raises(PoserError, match="unknown skeleton"):
        get_skeleton("mpii16")
