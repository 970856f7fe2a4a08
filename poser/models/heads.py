"""Heads: backbone features -> raw outputs, and the integral head's training targets
(`IntegralHead.encode`). Decoding raw outputs into coordinates and scores is the codec's
(`poser.codec.decode_outputs`, numpy: the Predictor, training validation and every runtime
call it), which also says what each head's scores mean.

Shapes: N images, K joints, S input side, h x w heatmap. Coordinates are normalised crop
coordinates (geometry.normalize): the crop spans [-0.5, 0.5] and 0 is its centre.

- `fc` (DeepPose as published): global-pooled features -> linear -> (x, y) per joint, with an
  optional RLE sigma.
- `integral` (integral regression / DSNT): an FPN-style top-down merge of the backbone's last
  four resolutions to stride ~4, K heatmap logits, a spatial softmax, and the expected (x, y).
  Still a coordinate regressor, differentiable end to end; training adds a dense term (KL
  divergence of each heatmap from a small Gaussian at the target) that gives every pixel a
  gradient from the first step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from poser.codec import HEATMAP_SIGMA


class FCHead(nn.Module):
    """(N, D) pooled features -> coords (N, K, 2), visible logits (N, K), sigma (N, K, 2)."""

    kind = "fc"

    def __init__(self, dim: int, num_joints: int, sigma: bool = True) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.coords = nn.Linear(dim, num_joints * 2)
        self.visible = nn.Linear(dim, num_joints)
        # Per-joint sigma for RLE (and confidence at inference); absent for L2 / smooth-L1 / L1,
        # where it would never get a gradient.
        self.sigma = nn.Linear(dim, num_joints * 2) if sigma else None
        nn.init.zeros_(self.coords.bias)              # start at the crop centre
        nn.init.normal_(self.coords.weight, std=1e-3)

    def forward(self, f: torch.Tensor) -> dict[str, torch.Tensor]:
        n, k = f.shape[0], self.num_joints
        out = {"coords": self.coords(f).view(n, k, 2), "visible": self.visible(f)}
        if self.sigma is not None:
            out["sigma"] = torch.sigmoid(self.sigma(f).view(n, k, 2)) + 1e-6
        return out


def _conv(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def heatmap_grid(h: int, w: int, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised crop coordinates of the heatmap cell centres: x (w,), y (h,), as the codec's
    `cell_centres` (tests/test_heads.py holds them equal). In torch, for the forward that export
    traces: the shape's values are tensors there."""
    x = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w - 0.5
    y = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h - 0.5
    return x, y


class IntegralHead(nn.Module):
    """Backbone feature maps (finest first, 4 levels) -> heatmap logits (N, K, h, w), their
    soft-argmax coords (N, K, 2) and visible logits (N, K)."""

    kind = "integral"

    def __init__(self, channels: list[int], num_joints: int, width: int = 128, fine: int = 64) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.lateral = nn.ModuleList(_conv(c, width) for c in channels[1:])
        self.fine_lateral = _conv(channels[0], fine)
        self.reduce = _conv(width, fine)
        self.smooth = _conv(fine, fine, 3)
        self.logits = nn.Conv2d(fine, num_joints, 1)
        self.visible = nn.Linear(channels[-1], num_joints)
        nn.init.normal_(self.logits.weight, std=1e-3)   # start from flat heatmaps: the crop centre
        nn.init.zeros_(self.logits.bias)

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        p = self.lateral[-1](feats[-1])
        for f, lat in zip(reversed(feats[1:-1]), reversed(self.lateral[:-1]), strict=True):   # top-down
            p = F.interpolate(p, size=f.shape[-2:], mode="nearest") + lat(f)
        p = F.interpolate(self.reduce(p), size=feats[0].shape[-2:], mode="nearest") + self.fine_lateral(feats[0])
        logits = self.logits(self.smooth(p))
        prob = self.softmax(logits)
        return {"heatmap": logits, "coords": self.expectation(prob),
                "visible": self.visible(feats[-1].mean((2, 3)))}

    @staticmethod
    def softmax(logits: torch.Tensor) -> torch.Tensor:
        n, k, h, w = logits.shape
        return torch.softmax(logits.float().reshape(n, k, h * w), -1).view(n, k, h, w)

    @staticmethod
    def expectation(prob: torch.Tensor) -> torch.Tensor:
        """(N, K, h, w) probabilities -> (N, K, 2) expected normalised (x, y)."""
        x, y = heatmap_grid(*prob.shape[-2:], prob.device, prob.dtype)
        return torch.stack([(prob.sum(2) * x).sum(-1), (prob.sum(3) * y).sum(-1)], -1)

    @staticmethod
    def encode(target: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Targets (N, K, 2) normalised -> (N, K, h, w) Gaussians (sum 1) of HEATMAP_SIGMA cells."""
        h, w = shape
        x, y = heatmap_grid(h, w, target.device)
        gx = torch.exp(-((x - target[..., :1]) * w) ** 2 / (2 * HEATMAP_SIGMA ** 2))     # (N, K, w)
        gy = torch.exp(-((y - target[..., 1:]) * h) ** 2 / (2 * HEATMAP_SIGMA ** 2))     # (N, K, h)
        q = gy[..., :, None] * gx[..., None, :]
        return q / q.sum((-2, -1), keepdim=True).clamp(min=1e-12)


HEAD_TYPES: dict[str, type[FCHead] | type[IntegralHead]] = {"fc": FCHead, "integral": IntegralHead}
# codec.HEADS names the same kinds (tests/test_heads.py holds them equal): the decode is the codec's
