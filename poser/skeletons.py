"""Skeleton definitions as data: joint names, flip pairs, limbs, OKS sigmas.

Everything that depends on which joints exist (flip augmentation, PCP limbs, PDJ torso,
drawing colours, COCO OKS) reads it from here, so a new skeleton is one table.
Left/right are always the person's own, as in COCO and LSP annotations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from poser.errors import PoserError


@dataclass(frozen=True)
class Limb:
    """A joint pair. `kind` groups limbs for PCP tables (e.g. both upper arms)."""

    kind: str
    a: int
    b: int


@dataclass(frozen=True)
class Skeleton:
    name: str
    joints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    # Connections drawn by `annotate`; a superset of what PCP scores.
    draw_limbs: tuple[tuple[int, int], ...]
    # Limbs scored by PCP (DeepPose's limb types).
    pcp_limbs: tuple[Limb, ...]
    # Torso diameter for PDJ: (left shoulder, right hip), fallback the other diagonal.
    torso: tuple[int, int]
    torso_fallback: tuple[int, int]
    # Per-joint OKS sigmas (COCO keypoint evaluation).
    sigmas: tuple[float, ...]
    # Joint groups for per-group PDJ tables.
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation p such that flipped_keypoints = keypoints[p] after mirroring x."""
        perm = np.arange(self.num_joints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @property
    def sides(self) -> tuple[str, ...]:
        """'L', 'R' or 'C' per joint, from the joint names (used for drawing colours)."""
        out = []
        for n in self.joints:
            out.append("L" if n.startswith("left_") else "R" if n.startswith("right_") else "C")
        return tuple(out)

    def index(self, joint: str) -> int:
        return self.joints.index(joint)

    def torso_diagonals(self, coords: np.ndarray) -> np.ndarray:
        """(N, 2) lengths of the torso diagonals of poses (N, K, 2+): (left shoulder - right
        hip, right shoulder - left hip). The torso diameter of PDJ (ground truth,
        `metrics.torso_diameter`) and of the cascade's sub-images (estimates,
        `cascade.pose_diameter`) are both made of these."""
        c = np.asarray(coords, np.float64)[..., :2]
        return np.stack([np.linalg.norm(c[:, a] - c[:, b], axis=-1) for a, b in (self.torso, self.torso_fallback)],
                        -1)


def _build(
    name: str,
    joints: list[str],
    draw: list[tuple[str, str]],
    pcp: list[tuple[str, str, str]],
    sigmas: list[float],
    groups: dict[str, list[str]],
) -> Skeleton:
    ix = {n: i for i, n in enumerate(joints)}
    pairs = tuple(
        (ix[n], ix["right_" + n[5:]]) for n in joints if n.startswith("left_")
    )
    return Skeleton(
        name=name,
        joints=tuple(joints),
        flip_pairs=pairs,
        draw_limbs=tuple((ix[a], ix[b]) for a, b in draw),
        pcp_limbs=tuple(Limb(k, ix[a], ix[b]) for k, a, b in pcp),
        torso=(ix["left_shoulder"], ix["right_hip"]),
        torso_fallback=(ix["right_shoulder"], ix["left_hip"]),
        sigmas=tuple(sigmas),
        groups={g: tuple(ix[n] for n in ns) for g, ns in groups.items()},
    )


_LIMBS_PCP = [
    ("upper_arm", "left_shoulder", "left_elbow"),
    ("upper_arm", "right_shoulder", "right_elbow"),
    ("lower_arm", "left_elbow", "left_wrist"),
    ("lower_arm", "right_elbow", "right_wrist"),
    ("upper_leg", "left_hip", "left_knee"),
    ("upper_leg", "right_hip", "right_knee"),
    ("lower_leg", "left_knee", "left_ankle"),
    ("lower_leg", "right_knee", "right_ankle"),
    # Neither skeleton has a pelvis or neck-to-pelvis joint pair, so the torso is scored
    # as its two sides (shoulder to hip), the way several LSP evaluations do it.
    ("torso", "left_shoulder", "left_hip"),
    ("torso", "right_shoulder", "right_hip"),
]

_BODY_DRAW = [
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
    ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"),
    ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),
]

_BODY_GROUPS = {
    "shoulders": ["left_shoulder", "right_shoulder"],
    "elbows": ["left_elbow", "right_elbow"],
    "wrists": ["left_wrist", "right_wrist"],
    "hips": ["left_hip", "right_hip"],
    "knees": ["left_knee", "right_knee"],
    "ankles": ["left_ankle", "right_ankle"],
}

COCO17 = _build(
    "coco17",
    [
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ],
    _BODY_DRAW + [
        ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "right_eye"),
        ("left_eye", "left_ear"), ("right_eye", "right_ear"),
        ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
    ],
    _LIMBS_PCP,
    # pycocotools' sigmas (COCO keypoint evaluation), in COCO joint order.
    [.026, .025, .025, .035, .035, .079, .079, .072, .072,
     .062, .062, .107, .107, .087, .087, .089, .089],
    {"head": ["nose", "left_eye", "right_eye", "left_ear", "right_ear"], **_BODY_GROUPS},
)

LSP14 = _build(
    "lsp14",
    [
        "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
        "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
        "left_wrist", "neck", "head_top",
    ],
    _BODY_DRAW + [
        ("neck", "head_top"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
    ],
    _LIMBS_PCP + [("head", "neck", "head_top")],
    # COCO's sigmas for the shared body joints; neck and head top have no COCO sigma, so
    # they take the shoulder value, as CrowdPose's evaluation does.
    [.089, .087, .107, .107, .087, .089, .062, .072, .079, .079, .072, .062, .079, .079],
    {"head": ["neck", "head_top"], **_BODY_GROUPS},
)

# COCO-17 with LSP's neck and head top: one network that answers both formats, so an LSP-14
# model can keep learning the face from a teacher that knows it (BlazePose) while LSP data
# teaches the neck and head top. `poser export --skeleton lsp14|coco17` keeps the joints one needs.
BODY19 = _build(
    "body19",
    [*COCO17.joints, "neck", "head_top"],
    [(COCO17.joints[a], COCO17.joints[b]) for a, b in COCO17.draw_limbs] + [
        ("neck", "head_top"), ("neck", "left_shoulder"), ("neck", "right_shoulder"),
    ],
    _LIMBS_PCP + [("head", "neck", "head_top")],
    [*COCO17.sigmas, .079, .079],
    {"head": ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "neck", "head_top"], **_BODY_GROUPS},
)

SKELETONS: dict[str, Skeleton] = {s.name: s for s in (COCO17, LSP14, BODY19)}


def get_skeleton(name: str) -> Skeleton:
    try:
        return SKELETONS[name]
    except KeyError:
        raise PoserError(f"unknown skeleton {name!r} (known: {', '.join(SKELETONS)})") from None


def convert(keypoints: np.ndarray, src: Skeleton, dst: Skeleton) -> np.ndarray:
    """(..., K_src, C) keypoints of `src` -> (..., K_dst, C) of `dst`, joints matched by name. A
    joint `src` lacks comes out all zeros: unlabelled, so it gives no loss and no metric (LSP
    data has no nose, COCO data no neck). Raises when the two share too little to score a pose
    (the torso's shoulders and hips)."""
    if src.name == dst.name:
        return keypoints
    shared = set(src.joints) & set(dst.joints)
    torso = {dst.joints[j] for j in (*dst.torso, *dst.torso_fallback)}
    if not torso <= shared:
        raise PoserError(f"{src.name} and {dst.name} joints share too little (no torso in common)")
    kp = np.asarray(keypoints)
    out = np.zeros(kp.shape[:-2] + (dst.num_joints, kp.shape[-1]), kp.dtype)
    for j, name in enumerate(dst.joints):
        if name in src.joints:
            out[..., j, :] = kp[..., src.index(name), :]
    return out


# A joint one skeleton lacks, and the other's joint whose visibility stands in for it when a
# model of one starts from a model of the other (`train.stages.init_from`): LSP's head top for
# COCO's face points, COCO's nose for LSP's head top, a shoulder for the neck.
VISIBILITY_STAND_INS = {"nose": "head_top", "left_eye": "head_top", "right_eye": "head_top", "left_ear": "head_top",
                        "right_ear": "head_top", "head_top": "nose", "neck": "left_shoulder"}


def unlabelled_in(src: Skeleton, dst: Skeleton) -> tuple[str, ...]:
    """The joints of `dst` that data labelled in `src` cannot supervise or score."""
    return tuple(n for n in dst.joints if n not in src.joints)
