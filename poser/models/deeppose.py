"""The DeepPose regressor: backbone -> per-joint coordinates, visibility and (RLE) sigma.

Shapes: N images, K joints. Coordinates are normalised crop coordinates (geometry.normalize):
the crop spans [-0.5, 0.5] and 0 is its centre.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from poser.codec import HEADS
from poser.errors import PoserError
from poser.models.backbones import create_backbone, pyramid, trunk
from poser.models.blazepose import BlazeHead, BlazeTrunk
from poser.models.heads import FCHead, IntegralHead
from poser.models.weights import load_weights
from poser.spec import ModelSpec, StageSpec


class DeepPose(nn.Module):
    """backbone -> head. `head` is 'fc' (global pool + linear, as published) or 'integral'
    (heatmap soft-argmax over an FPN merge of the backbone's feature maps); see models/heads."""

    def __init__(self, backbone: str, num_joints: int, pretrained: str | None = None, sigma: bool = True,
                 head: str = "fc", joints: tuple[str, ...] | None = None) -> None:
        super().__init__()
        if head not in HEADS:
            raise PoserError(f"unknown head {head!r} (known: {', '.join(HEADS)})")
        self.backbone, dim = create_backbone(backbone, pretrained)
        self.num_joints = num_joints
        if isinstance(self.backbone, BlazeTrunk):
            # BlazePose has its own decoder to stride 4: the head reads the map its landmark
            # heatmaps are read from, and starts as those heatmaps for the joints it knows.
            if head != "integral":
                raise PoserError(f"backbone {backbone} takes the integral head (its heatmaps), not {head!r}")
            self.head = BlazeHead(*self.backbone.channels(), num_joints)
            if self.backbone.landmark_heatmap is not None and joints is not None:
                self.head.start_from(self.backbone.landmark_heatmap, joints)
            self.backbone.landmark_heatmap = None
        elif head == "fc":
            self.head: nn.Module = FCHead(dim, num_joints, sigma)
        else:
            if hasattr(self.backbone, "fc"):          # AlexNet's FC layers: unused by a spatial head
                self.backbone.fc = nn.Identity()
            self.head = IntegralHead(_pyramid_channels(self.backbone), num_joints)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, 3, S, S) normalised images -> the head's raw outputs (coords (N, K, 2) and
        visible logits (N, K) always; sigma (N, K, 2) or heatmap (N, K, h, w) by head)."""
        if self.head.kind == "fc" or isinstance(self.backbone, BlazeTrunk):
            return self.head(self.backbone(x))
        return self.head(pyramid(trunk(self.backbone), x))


def _pyramid_channels(backbone: nn.Module) -> list[int]:
    was = backbone.training
    backbone.eval()
    with torch.no_grad():
        maps = pyramid(trunk(backbone), torch.zeros(1, 3, 128, 128))
    backbone.train(was)
    return [m.shape[1] for m in maps]


def create_model(backbone: str, num_joints: int, pretrained: str | None = None, sigma: bool = True,
                 head: str = "fc", joints: tuple[str, ...] | None = None) -> DeepPose:
    """`joints` (names) lets a pose-pretrained head start from what it knows of each joint."""
    return DeepPose(backbone, num_joints, pretrained, sigma, head, joints)


def model_from_spec(spec: StageSpec) -> DeepPose:
    """An untrained model of the architecture a weights file's spec describes."""
    return create_model(spec.backbone, len(spec.joints), sigma=spec.sigma_head, head=spec.head)


def _upgrade(state: dict) -> dict:
    # Files written before heads were modules hold 'coords.weight' etc. at the top level.
    return {(f"head.{k}" if k.split(".")[0] in ("coords", "visible", "sigma") else k): v for k, v in state.items()}


def _build(path: Path, what: str, state: dict, spec: StageSpec, device) -> DeepPose:
    try:
        model = model_from_spec(spec)
        model.load_state_dict(_upgrade(state))
    except (KeyError, RuntimeError, PoserError) as e:
        raise PoserError(f"{path}: {what} do not match the model their metadata describes ({e})") from None
    if not all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()):
        raise PoserError(f"{path}: {what} hold NaN or infinite values (a diverged training run?)")
    return model.to(device).eval()


def load_stages(path: Path, device: str | torch.device = "cpu",
                stages: int | None = None) -> list[tuple[DeepPose, StageSpec]]:
    """The networks of a weights file with their specs: one for a stage-1 file, S for a cascade
    bundle (tensors prefixed 'stage1.', 'stage2.', ...). `stages` keeps only the first N."""
    state, meta = load_weights(path)
    spec = ModelSpec.from_meta(meta, str(path))
    if stages is not None and stages > len(spec):
        raise PoserError(f"`stages` {stages}: {path} holds a {len(spec)}-stage model")
    spec = spec.take(stages)
    if "stages" not in meta:           # a single network: tensors unprefixed
        return [(_build(path, "weights", state, spec.first, device), spec.first)]
    out = []
    for s, st in enumerate(spec.stages, start=1):
        prefix = f"stage{s}."
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not part:
            raise PoserError(f"{path}: cascade bundle without stage-{s} weights (stage {s} is missing)")
        out.append((_build(path, f"stage-{s} weights", part, st, device), st))
    return out


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[DeepPose, StageSpec]:
    """Stage one of a weights file, rebuilt from the file alone, in eval mode on `device`."""
    return load_stages(path, device, 1)[0]
