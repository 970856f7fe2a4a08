"""Heads: backbone features -> raw outputs, and each head's codec (`encode` training targets,
`decode` raw outputs into coordinates and scores). Decoding happens here and nowhere else:
the Predictor, training validation and export all call `head.decode`.

Shapes: N images, K joints, S input side, h x w heatmap. Coordinates are normalised crop
coordinates (geometry.normalize): the crop spans [-0.5, 0.5] and 0 is its centre.

- `fc` (DeepPose as published): global-pooled features -> linear -> (x, y) per joint, with an
  optional RLE sigma. Score = P(visible) x (1 - mean sigma) (just P(visible) without sigma).
- `integral` (integral regression / DSNT): an FPN-style top-down merge of the backbone's last
  four resolutions to stride ~4, K heatmap logits, a spatial softmax, and the expected (x, y).
  Still a coordinate regressor, differentiable end to end; training adds a dense term (KL
  divergence of each heatmap from a small Gaussian at the target) that gives every pixel a
  gradient from the first step. Score = P(visible) x the heatmap's probability mass within
  `SCORE_RADIUS` heatmap-Gaussian sigmas of the estimate: 0.86 for a heatmap exactly like its
  training target, near 0 for a heatmap spread over the crop (the model does not know).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

HEATMAP_SIGMA = 1.5     # target Gaussian sigma, in heatmap cells
SCORE_RADIUS = 2.0      # confidence = heatmap mass within this many sigmas of the estimate
DECODE_RADIUS = 6.0     # the shipped model's decode radius, in cells (measured: README)


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

    @staticmethod
    def merge_flipped(out: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor],
                      flip_index) -> dict[str, torch.Tensor]:
        """Flip test: raw outputs of a crop and of its mirror image (joints (K,) relabelled by
        `flip_index`) -> one raw output in the crop's frame, their average."""
        m = {k: v.float()[:, flip_index] for k, v in mirrored.items()}
        m["coords"] = m["coords"] * m["coords"].new_tensor([-1.0, 1.0])
        return {k: (v.float() + m[k]) / 2 for k, v in out.items()}

    @staticmethod
    def decode(out: dict[str, torch.Tensor], radius: float | None = None) -> dict[str, torch.Tensor]:
        """Raw outputs -> coords (N, K, 2) normalised, score and visible (N, K) in [0, 1]
        (`radius` is the integral head's; coordinates here are regressed directly)."""
        visible = torch.sigmoid(out["visible"].float())
        score = visible
        if "sigma" in out:
            score = score * (1 - out["sigma"].float().mean(-1)).clamp(0, 1)
        return {"coords": out["coords"].float(), "score": score, "visible": visible}


def _conv(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def heatmap_grid(h: int, w: int, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised crop coordinates of the heatmap cell centres: x (w,), y (h,). Cell j of w
    covers [j / w, (j + 1) / w) of the crop, so its centre is (j + 0.5) / w - 0.5 whatever S is."""
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

    @classmethod
    def merge_flipped(cls, out: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor],
                      flip_index) -> dict[str, torch.Tensor]:
        """Flip test: raw outputs of a crop and of its mirror image (joints relabelled by
        `flip_index`) -> one raw output in the crop's frame. The heatmaps are averaged as
        probabilities before the one decode (the mirror crop is exact: cell j <-> w - 1 - j),
        so a joint that one view places on the wrong limb cannot drag the mean between two."""
        hm = mirrored["heatmap"].float()[:, flip_index].flip(-1)
        prob = (cls.softmax(out["heatmap"]) + cls.softmax(hm)) / 2
        vis = (out["visible"].float() + mirrored["visible"].float()[:, flip_index]) / 2
        return {"heatmap": torch.log(prob.clamp(min=1e-30)), "coords": cls.expectation(prob), "visible": vis}

    @staticmethod
    def local(prob: torch.Tensor, radius: float = DECODE_RADIUS) -> torch.Tensor:
        """(N, K, h, w) probabilities -> (N, K, 2) their expectation within `radius` cells of
        each map's peak, renormalised. Training regresses the expectation over the whole map,
        but where a map holds two modes (the left and the right wrist, say) that mean lies
        between them, on neither; the local expectation keeps the soft-argmax's sub-cell
        precision around the mode (measured: docs/reference-model.md)."""
        h, w = prob.shape[-2:]
        peak = prob.flatten(2).argmax(-1)
        vals, x, y = _window(prob, torch.div(peak, w, rounding_mode="floor"), peak % w, *_disc(radius, prob.device))
        vals = vals / vals.sum(-1, keepdim=True)     # the peak itself is always inside: sum > 0
        return torch.stack([(vals * x).sum(-1), (vals * y).sum(-1)], -1)

    @classmethod
    def decode(cls, out: dict[str, torch.Tensor], radius: float | None = None) -> dict[str, torch.Tensor]:
        """Raw outputs -> coords (N, K, 2) normalised, score and visible (N, K) in [0, 1]. The
        coordinates are the heatmap's expectation: over the whole map (what training
        optimises), or within `radius` cells of its peak (`local`) for a model whose weights
        file says `decode_radius` (measured per model: a well-trained model's heatmaps gain from
        it, a weakly trained model's noisy peaks lose)."""
        prob = cls.softmax(out["heatmap"])
        coords = cls.local(prob, radius) if radius else cls.expectation(prob)
        visible = torch.sigmoid(out["visible"].float())
        return {"coords": coords, "score": visible * cls.mass_near(prob, coords), "visible": visible}

    @staticmethod
    def mass_near(prob: torch.Tensor, coords: torch.Tensor, radius: float = SCORE_RADIUS * HEATMAP_SIGMA
                  ) -> torch.Tensor:
        """(N, K) probability mass of the cells whose centres lie within `radius` cells of
        `coords` (N, K, 2) normalised."""
        h, w = prob.shape[-2:]
        cx, cy = (coords[..., 0] + 0.5) * w - 0.5, (coords[..., 1] + 0.5) * h - 0.5    # in cell units
        half = int(radius) + 1              # a square window holds every cell of the disc
        d = torch.arange(-half, half + 1, device=prob.device)
        dy, dx = (t.flatten() for t in torch.meshgrid(d, d, indexing="ij"))
        vals, x, y = _window(prob, cy.round().long(), cx.round().long(), dy, dx)
        d2 = ((x - coords[..., :1]) * w) ** 2 + ((y - coords[..., 1:]) * h) ** 2
        return (vals * (d2 <= radius ** 2)).sum(-1)


def _disc(radius: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell offsets (dy, dx), each (D,), within `radius` cells of a cell."""
    r = int(radius)
    d = torch.arange(-r, r + 1, device=device)
    dy, dx = (t.flatten() for t in torch.meshgrid(d, d, indexing="ij"))
    keep = dy ** 2 + dx ** 2 <= radius ** 2
    return dy[keep], dx[keep]


def _window(prob: torch.Tensor, row: torch.Tensor, col: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cells at offsets (dy, dx) (D,) around cell (row, col) (N, K) of each map: their
    probabilities (N, K, D), 0 off the map, and their centres x, y (N, K, D) normalised. A
    window of ~100 cells instead of the whole map: decoding is a share of CPU inference."""
    h, w = prob.shape[-2:]
    rows, cols = row[..., None] + dy, col[..., None] + dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    vals = prob.flatten(2).gather(-1, rows * w + cols) * inside
    return vals, (cols.to(prob.dtype) + 0.5) / w - 0.5, (rows.to(prob.dtype) + 0.5) / h - 0.5


HEAD_TYPES: dict[str, type[FCHead] | type[IntegralHead]] = {"fc": FCHead, "integral": IntegralHead}
HEADS = tuple(HEAD_TYPES)


def decode_outputs(head: str, out: dict[str, torch.Tensor], mirrored: dict[str, torch.Tensor] | None = None,
                   flip_index=None, radius: float | None = None) -> dict[str, torch.Tensor]:
    """The one decode: raw outputs of head kind `head` (from torch or any runtime) -> coords
    (N, K, 2) normalised, score and visible (N, K) in [0, 1]. With `mirrored` (the raw outputs
    of the mirrored crops, joints relabelled by `flip_index`): the flip test, both merged by the
    head before the decode. `radius`: the weights file's `decode_radius` (integral head)."""
    cls = HEAD_TYPES[head]
    if mirrored is not None:
        out = cls.merge_flipped(out, mirrored, flip_index)
    return cls.decode(out, radius)
