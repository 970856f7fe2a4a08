"""Losses: (prediction, target, weight) -> scalar, as pure functions or small modules.

Shapes: N instances, K joints. `target` (N, K, 2) normalised coordinates; `weight` (N, K),
1 for joints with a labelled position (occluded ones included), 0 otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from poser.models.heads import IntegralHead


def _mean(per_joint: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (per_joint * weight).sum() / weight.sum().clamp(min=1.0)


def l2(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """DeepPose's loss: squared distance on labelled joints."""
    return _mean(((pred - target) ** 2).sum(-1), weight)


def l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Integral regression's loss (Sun et al. 2018): absolute error on labelled joints."""
    return _mean((pred - target).abs().sum(-1), weight)


def smooth_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, beta: float = 0.01) -> torch.Tensor:
    return _mean(F.smooth_l1_loss(pred, target, reduction="none", beta=beta).sum(-1), weight)


def visibility_bce(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """BCE of the visible logits (N, K); `known` (K,) masks out joints the data never labels
    (for them 'not labelled' says nothing about being visible)."""
    if known is None:
        return F.binary_cross_entropy_with_logits(logits, target)
    per = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * known
    return per.sum() / (known.sum() * logits.shape[0]).clamp(min=1.0)


class RealNVP(nn.Module):
    """A 2-D RealNVP flow (3 coupling pairs of 64-unit MLPs) with a standard normal base."""

    def __init__(self, hidden: int = 64, couplings: int = 6) -> None:
        super().__init__()
        self.register_buffer("masks", torch.tensor([[0.0, 1.0], [1.0, 0.0]] * (couplings // 2)))

        def mlp(last: nn.Module | None) -> nn.Sequential:
            layers = [nn.Linear(2, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden), nn.LeakyReLU(),
                      nn.Linear(hidden, 2)]
            return nn.Sequential(*layers, *([last] if last else []))

        self.s = nn.ModuleList(mlp(nn.Tanh()) for _ in range(couplings))
        self.t = nn.ModuleList(mlp(None) for _ in range(couplings))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, gain=0.01)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log density of (M, 2) points."""
        log_det = x.new_zeros(x.shape[0])
        z = x
        for i in reversed(range(len(self.s))):           # data -> base
            m = self.masks[i]
            z_ = m * z
            s = self.s[i](z_) * (1 - m)
            t = self.t[i](z_) * (1 - m)
            z = (1 - m) * (z - t) * torch.exp(-s) + z_
            log_det = log_det - s.sum(-1)
        return -0.5 * (z ** 2).sum(-1) - math.log(2 * math.pi) + log_det


class RLELoss(nn.Module):
    """Residual log-likelihood estimation (Li et al., ICCV 2021).

    The error normalised by the predicted sigma is scored by a Laplace density times a
    learned flow that models only the residual; the flow is trained with the model and
    dropped at inference, where 1 - mean(sigma) is each joint's confidence.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flow = RealNVP()

    def forward(self, pred: torch.Tensor, sigma: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor) -> torch.Tensor:
        bar = (pred - target) / sigma
        log_phi = self.flow.log_prob(bar.reshape(-1, 2).float()).view(pred.shape[:-1])
        nf = torch.log(sigma).sum(-1) - log_phi                     # flow term, per joint
        amp = 1 / math.sqrt(2 * math.pi)
        q = (torch.log(sigma / amp) + (pred - target).abs() / (math.sqrt(2) * sigma)).sum(-1)
        return _mean(nf + q, weight)


LOSSES = ("l2", "l1", "smooth_l1", "rle")
HEATMAP_WEIGHT = 0.1   # the integral head's dense KL term, beside its coordinate loss


class PoseLoss(nn.Module):
    """The training objective: a coordinate loss on labelled joints + BCE on visibility, plus,
    for a heatmap (integral) head, KL towards a Gaussian at each labelled joint inside the crop."""

    def __init__(self, kind: str = "rle", visibility_weight: float = 0.1,
                 heatmap_weight: float = HEATMAP_WEIGHT, known: torch.Tensor | None = None) -> None:
        super().__init__()
        # (K,) 1 for the model's joints the data labels (skeletons.convert): the others get no loss
        self.register_buffer("known", known, persistent=False)
        if kind not in LOSSES:
            raise ValueError(kind)
        self.kind, self.vis_w, self.hm_w = kind, visibility_weight, heatmap_weight
        self.rle = RLELoss() if kind == "rle" else None

    def forward(self, out: dict[str, torch.Tensor], target: torch.Tensor, weight: torch.Tensor,
                visible: torch.Tensor, soft: torch.Tensor | None = None, distill_weight: float = 0.0,
                distill_labelled: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pred = out["coords"].float()
        if self.kind == "l2":
            coord = l2(pred, target, weight)
        elif self.kind == "l1":
            coord = l1(pred, target, weight)
        elif self.kind == "smooth_l1":
            coord = smooth_l1(pred, target, weight)
        else:
            coord = self.rle(pred, out["sigma"].float(), target, weight)
        vis = visibility_bce(out["visible"].float(), visible, self.known)
        total = coord + self.vis_w * vis
        parts = {"coord": coord.detach(), "vis": vis.detach()}        # tensors: no device sync
        if "heatmap" in out:
            hm = heatmap_kl(out["heatmap"], target, weight * visible)
            total = total + self.hm_w * hm
            parts["heatmap"] = hm.detach()
        if soft is not None:
            # a joint the crop labels learns mostly from its label; one it does not, from the teacher
            kl = distill_kl(out["heatmap"], soft, torch.where(weight > 0, distill_labelled, 1.0))
            total = total + distill_weight * kl
            parts["distill"] = kl.detach()
        return total, parts


def heatmap_kl(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean KL(Gaussian at target || softmax(logits)) over joints with weight > 0: the dense
    term of the integral head. logits (N, K, h, w), target (N, K, 2), weight (N, K)."""
    kl = _kl(IntegralHead.encode(target.float(), logits.shape[-2:]), logits)
    return (kl * weight).sum() / weight.sum().clamp(min=1.0)


def distill_kl(logits: torch.Tensor, soft: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """KL(teacher || softmax(logits)) weighted by `weight` (N, K), averaged over the joints the
    teacher knows: soft (N, K, H, W) probabilities (all-zero maps for joints it does not know),
    resampled to the logits' grid."""
    q = F.adaptive_avg_pool2d(soft.float(), logits.shape[-2:])
    mass = q.sum((-2, -1))                                      # (N, K): 0 where unknown
    known = (mass > 0).float()
    kl = _kl(q / mass.clamp(min=1e-12)[..., None, None], logits)
    return (kl * known * weight).sum() / known.sum().clamp(min=1.0)


def _kl(q: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """(N, K) KL(q || softmax(logits)) of (N, K, h, w) distributions q."""
    logp = torch.log_softmax(logits.float().flatten(2), -1)
    qf = q.flatten(2)
    return (qf * (torch.log(qf.clamp(min=1e-12)) - logp)).sum(-1)
