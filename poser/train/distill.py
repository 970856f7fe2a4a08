"""A frozen pose network as teacher: BlazePose's own heatmaps, on every training crop, as soft
targets for the model's heatmaps (knowledge distillation).

Why: fine-tuning on one dataset wears away what the pretrained network knew about other scenes
(LSP-Extended's sports photos taught limbs and cost everyday arms), and a dataset teaches only
the joints it labels (LSP has no nose, eyes or ears). The teacher sees the same augmented crop
as the model and says where BlazePose finds each joint it knows; `losses.distill_kl` pulls the
model's heatmap towards that distribution, beside the labels' own loss.

Shapes: N crops, K model joints, S the model's input side; the teacher runs at its own input
(256: BlazePose knows people at that scale, and at 192 it finds far fewer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from poser.errors import PoserError
from poser.models.blazepose import CHANNELS, VARIANTS, BlazeTrunk, load_mediapipe

TEACHERS = tuple(f"blazepose_{v}" for v in VARIANTS)
TEACHER_INPUT = 256


def teacher_channels(joints: tuple[str, ...], skip: tuple[str, ...] = ()) -> list[int]:
    """BlazePose's heatmap channel per model joint, -1 where it has none of its own (the neck
    and head top are approximations at the head's start, not the teacher's knowledge) or where
    `skip` names the joint (its labels place it elsewhere: it learns from them alone)."""
    unknown = set(skip) - set(joints)
    if unknown:
        raise PoserError(f"`distill_skip`: {', '.join(sorted(unknown))} not among the model's joints "
                         f"({', '.join(joints)})")
    return [CHANNELS[n][0] if n in CHANNELS and len(CHANNELS[n]) == 1 and n != "head_top" and n not in skip
            else -1 for n in joints]


class Teacher(nn.Module):
    """(N, 3, S, S) normalised crops -> (N, K, 64, 64) BlazePose heatmap probabilities per model
    joint (zeros for joints it does not know) and the (K,) mask of the known ones."""

    def __init__(self, name: str, joints: tuple[str, ...], where: str = "mediapipe",
                 skip: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.trunk = BlazeTrunk(name.removeprefix("blazepose_"))
        load_mediapipe(self.trunk, where)
        w, b = self.trunk.landmark_heatmap
        self.trunk.landmark_heatmap = None
        self.conv = nn.Conv2d(w.shape[1], w.shape[0], 1)
        self.conv.load_state_dict({"weight": w, "bias": b})
        ch = torch.tensor(teacher_channels(joints, skip))
        self.register_buffer("channel", ch.clamp(min=0), persistent=False)
        self.register_buffer("known", (ch >= 0).float(), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)         # frozen: never in training mode

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x.float(), size=(TEACHER_INPUT, TEACHER_INPUT), mode="bilinear", align_corners=False)
        logits = self.conv(self.trunk(x)[0])[:, self.channel]
        n, k, h, w = logits.shape
        return torch.softmax(logits.reshape(n, k, h * w), -1).view(n, k, h, w) * self.known.view(1, k, 1, 1)
