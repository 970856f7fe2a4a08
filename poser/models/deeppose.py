"""The DeepPose regressor: backbone -> per-joint coordinates, visibility and (RLE) sigma.

Shapes: N images, K joints. Coordinates are normalised crop coordinates (geometry.normalize):
the crop spans [-0.5, 0.5] and 0 is its centre.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from poser.errors import PoserError
from poser.models.backbones import create_backbone, pyramid, trunk
from poser.models.heads import HEADS, FCHead, IntegralHead
from poser.models.weights import load_weights


class DeepPose(nn.Module):
    """backbone -> head. `head` is 'fc' (global pool + linear, as published) or 'integral'
    (heatmap soft-argmax over an FPN merge of the backbone's feature maps); see models/heads."""

    def __init__(self, backbone: str, num_joints: int, pretrained: str | None = None, sigma: bool = True,
                 head: str = "fc") -> None:
        super().__init__()
        if head not in HEADS:
            raise PoserError(f"unknown head {head!r} (known: {', '.join(HEADS)})")
        self.backbone, dim = create_backbone(backbone, pretrained)
        self.num_joints = num_joints
        if head == "fc":
            self.head: nn.Module = FCHead(dim, num_joints, sigma)
        else:
            if hasattr(self.backbone, "fc"):          # AlexNet's FC layers: unused by a spatial head
                self.backbone.fc = nn.Identity()
            self.head = IntegralHead(_pyramid_channels(self.backbone), num_joints)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, 3, S, S) normalised images -> the head's raw outputs (coords (N, K, 2) and
        visible logits (N, K) always; sigma (N, K, 2) or heatmap (N, K, h, w) by head)."""
        if self.head.kind == "fc":
            return self.head(self.backbone(x))
        return self.head(pyramid(trunk(self.backbone), x))

    def decode(self, out: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor] | None = None,
               flip_index=None, radius: float | None = None) -> dict[str, torch.Tensor]:
        """Raw outputs -> coords (N, K, 2) normalised, score (N, K) in [0, 1]. With `mirrored`
        (the raw outputs of the mirrored crops, joints relabelled by `flip_index`): the flip test,
        both merged by the head before the one decode. `radius`: the weights file's
        `decode_radius` (integral head)."""
        if mirrored is not None:
            out = self.head.merge_flipped(out, mirrored, flip_index)
        return self.head.decode(out, radius)


def _pyramid_channels(backbone: nn.Module) -> list[int]:
    was = backbone.training
    backbone.eval()
    with torch.no_grad():
        maps = pyramid(trunk(backbone), torch.zeros(1, 3, 128, 128))
    backbone.train(was)
    return [m.shape[1] for m in maps]


def create_model(backbone: str, num_joints: int, pretrained: str | None = None, sigma: bool = True,
                 head: str = "fc") -> DeepPose:
    return DeepPose(backbone, num_joints, pretrained, sigma, head)


def model_from_meta(meta: dict) -> DeepPose:
    """An untrained model of the architecture a weights file's metadata describes."""
    return create_model(meta["backbone"], len(meta["joints"]), sigma=bool(meta.get("sigma_head")),
                        head=meta.get("head", "fc"))


def _upgrade(state: dict) -> dict:
    # Files written before heads were modules hold 'coords.weight' etc. at the top level.
    return {(f"head.{k}" if k.split(".")[0] in ("coords", "visible", "sigma") else k): v for k, v in state.items()}


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[DeepPose, dict]:
    """Rebuild a model from a poser weights file alone (its metadata names everything),
    in eval mode on `device`. Returns the model and the file's metadata."""
    state, meta = load_weights(path)
    return _build(path, state, meta, device), meta


def _build(path: Path, state: dict, meta: dict, device) -> DeepPose:
    try:
        model = model_from_meta(meta)
        model.load_state_dict(_upgrade(state))
    except (KeyError, RuntimeError, PoserError) as e:
        raise PoserError(f"{path}: weights do not match the model their metadata describes ({e})") from None
    return model.to(device).eval()


def load_stages(path: Path, device: str | torch.device = "cpu",
                stages: int | None = None) -> list[tuple[DeepPose, dict]]:
    """The models of a weights file: one for a stage-1 file, S for a cascade bundle (whose
    tensors are prefixed 'stage1.', 'stage2.', ... and whose metadata lists every stage).
    `stages` keeps only the first N."""
    state, meta = load_weights(path)
    have = len(meta.get("stages", [meta]))
    if stages is not None and stages > have:
        raise PoserError(f"--stages {stages}: {path} holds a {have}-stage model")
    if "stages" not in meta:           # a single stage: the file is read once
        return [(_build(path, state, meta, device), meta)]
    out = []
    for s, m in enumerate(meta["stages"][:stages], start=1):
        prefix = f"stage{s}."
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not part:
            raise PoserError(f"{path}: cascade bundle without stage-{s} weights (stage {s} is missing)")
        try:
            model = model_from_meta(m)
            model.load_state_dict(_upgrade(part))
        except (KeyError, RuntimeError, PoserError) as e:
            raise PoserError(f"{path}: stage-{s} weights do not match their metadata ({e})") from None
        out.append((model.to(device).eval(), m))
    return out
