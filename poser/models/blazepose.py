"""BlazePose GHUM landmark networks (MediaPipe, Apache-2.0) as pose-pretrained poser backbones.

`blazepose_lite`, `blazepose_full` and `blazepose_heavy` rebuild MediaPipe's
`pose_landmark_{lite,full,heavy}.tflite` in torch (`tflite_graph.GraphNet`) up to the feature
map its 39 landmark heatmaps are read from (stride 4) and its deepest map (stride 32). The
graphs' topologies ship with poser (`blazepose/*.json`, no weights), so a trained model is one
self-describing safetensors file that needs neither MediaPipe nor the .tflite file.
`--pretrained mediapipe` (or a .tflite path) loads MediaPipe's weights; the head's heatmap
logits for each poser joint then start as BlazePose's own heatmap channels for that joint
(`CHANNELS`), so training starts from a network that already finds people's joints.

Shapes: N images, S input side (a multiple of 32), K joints, C feature channels.
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache
from pathlib import Path

import torch
from torch import nn

from poser.codec import MEAN, STD
from poser.errors import PoserError
from poser.files import cache_root
from poser.models.heads import IntegralHead
from poser.models.tflite_graph import GraphNet, Topology, read_tflite

VARIANTS = ("lite", "full", "heavy")
HEATMAP_OUTPUT = "Identity_3"           # the .tflite's (1, 64, 64, 39) heatmap logits at input 256

# BlazePose's 39 heatmap channels: 0 nose, 1-3 left eye, 4-6 right eye, 7/8 ears, 9/10 mouth,
# 11-16 shoulders / elbows / wrists (left, right), 17-22 hands, 23-28 hips / knees / ankles,
# 29-32 feet, 33-38 auxiliary. A poser joint starts from the mean of its channels' logits: the
# neck from both shoulders (whose softmax peaks then split the mass, so the expectation lies
# between them); the head top, which BlazePose lacks, from the nose.
CHANNELS: dict[str, tuple[int, ...]] = {
    "nose": (0,), "left_eye": (2,), "right_eye": (5,), "left_ear": (7,), "right_ear": (8,),
    "left_shoulder": (11,), "right_shoulder": (12,), "left_elbow": (13,), "right_elbow": (14,),
    "left_wrist": (15,), "right_wrist": (16,), "left_hip": (23,), "right_hip": (24,),
    "left_knee": (25,), "right_knee": (26,), "left_ankle": (27,), "right_ankle": (28,),
    "neck": (11, 12), "head_top": (0,),
}


def tflite_name(variant: str) -> str:
    return f"pose_landmark_{variant}.tflite"


@cache
def topology(variant: str) -> Topology:
    """The shipped topology of a variant: the ops from the input to `features` and `deep`."""
    path = Path(__file__).with_name("blazepose") / f"{variant}.json"
    return json.loads(path.read_text())


def prune(full: Topology) -> Topology:
    """A .tflite's whole topology -> what the backbone runs: the ops up to `features` (the map
    the heatmap conv reads) and `deep` (the stride-32 map the decoder starts from)."""
    producer = {op["out"]: op for op in full["ops"]}
    features = producer[full["outputs"][HEATMAP_OUTPUT]]["in"][0]
    first_resize = next(op for op in full["ops"] if op["op"] == "resize")
    deep = producer[first_resize["in"][0]]["in"][0]
    net = GraphNet(full | {"outputs": {"features": features, "deep": deep}}, ("features", "deep"))
    with torch.no_grad():
        maps = net(torch.zeros(1, 3, 64, 64))
    return {"input": full["input"], "ops": net.ops, "outputs": {"features": features, "deep": deep},
            "channels": [m.shape[1] for m in maps]}


class BlazeTrunk(nn.Module):
    """(N, 3, S, S) ImageNet-normalised input -> [features (N, C, S/4, S/4), deep (N, D, S/32, S/32)].
    BlazePose reads RGB in [0, 1]: the input is un-normalised first, so the codec's one
    convention holds for every backbone."""

    def __init__(self, variant: str) -> None:
        super().__init__()
        self.variant = variant
        self.net = GraphNet(topology(variant), ("features", "deep"))
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.landmark_heatmap: tuple[torch.Tensor, torch.Tensor] | None = None   # set by load_mediapipe

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net(x * self.std + self.mean)

    def channels(self) -> tuple[int, int]:
        """Channels of (features, deep)."""
        return tuple(topology(self.variant)["channels"])


class BlazeHead(nn.Module):
    """[features (N, C, h, w), deep (N, D, ...)] -> heatmap logits (N, K, h, w), their
    soft-argmax coords (N, K, 2) and visible logits (N, K): the integral head's outputs (the
    codec decodes them alike), read from BlazePose's own heatmap feature map."""

    kind = "integral"

    def __init__(self, channels: int, deep: int, num_joints: int) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.logits = nn.Conv2d(channels, num_joints, 1)
        self.visible = nn.Linear(deep, num_joints)
        nn.init.normal_(self.logits.weight, std=1e-3)
        nn.init.zeros_(self.logits.bias)

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.logits(feats[0])
        return {"heatmap": logits, "coords": IntegralHead.expectation(IntegralHead.softmax(logits)),
                "visible": self.visible(feats[1].mean((2, 3)))}

    def start_from(self, heatmap: tuple[torch.Tensor, torch.Tensor], joints: tuple[str, ...]) -> None:
        """Each joint's logits := the mean of BlazePose's heatmap channels for it (CHANNELS)."""
        w, b = heatmap          # (39, C, 1, 1), (39,)
        with torch.no_grad():
            for k, name in enumerate(joints):
                if name in CHANNELS:
                    ch = list(CHANNELS[name])
                    self.logits.weight[k] = w[ch].mean(0)
                    self.logits.bias[k] = b[ch].mean()


def create_trunk(variant: str) -> tuple[nn.Module, int]:
    trunk = BlazeTrunk(variant)
    return trunk, trunk.channels()[1]


def find_tflite(variant: str, where: str = "mediapipe") -> Path:
    """The .tflite of a variant: `where` is a path, or 'mediapipe': poser's cache (filled by
    `poser fetch-blazepose`), then an installed `mediapipe` package (its wheel holds full only)."""
    if where != "mediapipe":
        path = Path(where)
        if not path.is_file():
            raise PoserError(f"pretrained {where}: no such .tflite file")
        return path
    candidates = [blazepose_cache() / tflite_name(variant)]
    spec = importlib.util.find_spec("mediapipe")
    if spec and spec.origin:
        candidates.append(Path(spec.origin).parent / "modules" / "pose_landmark" / tflite_name(variant))
    for path in candidates:
        if path.is_file():
            return path
    raise PoserError(f"{tflite_name(variant)} not found (looked in {blazepose_cache()} and an installed mediapipe): "
                     "run poser fetch-blazepose, or pass the .tflite file as the pretrained weights")


def blazepose_cache() -> Path:
    """Where `poser fetch-blazepose` keeps the .tflite files ($POSER_CACHE or ~/.cache/poser)."""
    return cache_root() / "blazepose"


def load_mediapipe(trunk: BlazeTrunk, where: str = "mediapipe") -> None:
    """MediaPipe's weights into `trunk`, and its landmark heatmap conv kept aside for the head."""
    path = find_tflite(trunk.variant, where)
    full, weights = read_tflite(path)
    if prune(full) != topology(trunk.variant):
        raise PoserError(f"{path}: not the BlazePose {trunk.variant} graph poser rebuilds (another version?)")
    trunk.net.load_state_dict({f"convs.{n}.{p}": weights[f"{n}.{p}"]
                               for n in trunk.net.convs for p in ("weight", "bias")})
    heatmap_op = next(op for op in full["ops"] if op["out"] == full["outputs"][HEATMAP_OUTPUT])
    trunk.landmark_heatmap = (weights[f"op{heatmap_op['id']}.weight"], weights[f"op{heatmap_op['id']}.bias"])
