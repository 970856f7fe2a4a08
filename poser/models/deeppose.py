"""The DeepPose regressor: backbone -> per-joint coordinates, visibility and (RLE) sigma.

Shapes: N images, K joints. Coordinates are normalised crop coordinates (geometry.normalize):
the crop spans [-0.5, 0.5] and 0 is its centre.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from poser.checkpoint import load_weights
from poser.errors import PoserError
from poser.models.backbones import create_backbone


class DeepPose(nn.Module):
    def __init__(self, backbone: str, num_joints: int, pretrained: str | None = None, sigma: bool = True) -> None:
        super().__init__()
        self.backbone, dim = create_backbone(backbone, pretrained)
        self.num_joints = num_joints
        self.coords = nn.Linear(dim, num_joints * 2)
        self.visible = nn.Linear(dim, num_joints)
        # Per-joint sigma for RLE (and confidence at inference); absent for L2 / smooth-L1,
        # where it would never get a gradient.
        self.sigma = nn.Linear(dim, num_joints * 2) if sigma else None
        nn.init.zeros_(self.coords.bias)              # start at the crop centre
        nn.init.normal_(self.coords.weight, std=1e-3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, 3, S, S) normalised images -> coords (N, K, 2), visible logits (N, K) and,
        with a sigma head, sigma (N, K, 2) in (0, 1)."""
        f = self.backbone(x)
        n, k = x.shape[0], self.num_joints
        out = {"coords": self.coords(f).view(n, k, 2), "visible": self.visible(f)}
        if self.sigma is not None:
            out["sigma"] = torch.sigmoid(self.sigma(f).view(n, k, 2)) + 1e-6
        return out


def create_model(backbone: str, num_joints: int, pretrained: str | None = None, sigma: bool = True) -> DeepPose:
    return DeepPose(backbone, num_joints, pretrained, sigma)


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[DeepPose, dict]:
    """Rebuild a model from a poser weights file alone (its metadata names everything),
    in eval mode on `device`. Returns the model and the file's metadata."""
    state, meta = load_weights(path)
    try:
        model = create_model(meta["backbone"], len(meta["joints"]), sigma=bool(meta.get("sigma_head")))
        model.load_state_dict(state)
    except (KeyError, RuntimeError, PoserError) as e:
        raise PoserError(f"{path}: weights do not match the model their metadata describes ({e})") from None
    return model.to(device).eval(), meta


def load_stages(path: Path, device: str | torch.device = "cpu",
                stages: int | None = None) -> list[tuple[DeepPose, dict]]:
    """The models of a weights file: one for a stage-1 file, S for a cascade bundle (whose
    tensors are prefixed 'stage1.', 'stage2.', ... and whose metadata lists every stage).
    `stages` keeps only the first N."""
    state, meta = load_weights(path)
    if "stages" not in meta:
        model, meta = load_model(path, device)
        return [(model, meta)]
    out = []
    for s, m in enumerate(meta["stages"][:stages], start=1):
        prefix = f"stage{s}."
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not part:
            raise PoserError(f"{path}: cascade bundle without stage-{s} weights (stage {s} is missing)")
        try:
            model = create_model(m["backbone"], len(m["joints"]), sigma=bool(m.get("sigma_head")))
            model.load_state_dict(part)
        except (KeyError, RuntimeError, PoserError) as e:
            raise PoserError(f"{path}: stage-{s} weights do not match their metadata ({e})") from None
        out.append((model.to(device).eval(), m))
    return out
