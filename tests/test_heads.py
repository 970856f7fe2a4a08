"""The flip test: each head merges the raw outputs of a crop and of its mirror image before its
one decode (poser/models/heads.py, used by the Predictor)."""

import torch

from poser.models.heads import FCHead, IntegralHead
from poser.skeletons import LSP14

P = torch.as_tensor(LSP14.flip_index)


def _mirror(t: torch.Tensor) -> torch.Tensor:
    """Targets (N, K, 2) as the mirrored crop sees them: x negated, left/right relabelled."""
    return (t * torch.tensor([-1.0, 1.0]))[:, P]


def test_integral_flip_merge_of_a_consistent_pair_is_the_prediction():
    target = torch.rand(2, 14, 2) * 0.6 - 0.3       # inside the crop: a Gaussian cut by the border is biased
    shape = (32, 24)
    out = {"heatmap": torch.log(IntegralHead.encode(target, shape)), "visible": torch.randn(2, 14)}
    mirrored = {"heatmap": torch.log(IntegralHead.encode(_mirror(target), shape)), "visible": out["visible"][:, P]}
    merged = IntegralHead.decode(IntegralHead.merge_flipped(out, mirrored, P))
    assert torch.allclose(merged["coords"], IntegralHead.decode(out)["coords"], atol=1e-4)
    assert torch.allclose(merged["coords"], target, atol=2e-3)
    assert torch.allclose(merged["visible"], torch.sigmoid(out["visible"]), atol=1e-6)


def test_integral_flip_merge_averages_heatmaps_not_coordinates():
    # One view is split between two places (55% at A, 45% at B), the mirrored view sees B only:
    # the merged heatmap holds B at 72.5%, so the decode says B. Averaging the two views'
    # coordinates would have put the joint between A and B, where neither view saw it.
    a, b = torch.full((1, 14, 2), 0.0), torch.full((1, 14, 2), 0.0)
    a[..., 0], b[..., 0] = -0.3, 0.3
    shape = (32, 32)
    out = {"heatmap": torch.log(0.55 * IntegralHead.encode(a, shape) + 0.45 * IntegralHead.encode(b, shape)),
           "visible": torch.zeros(1, 14)}
    mirrored = {"heatmap": torch.log(IntegralHead.encode(_mirror(b), shape)), "visible": torch.zeros(1, 14)}
    merged = IntegralHead.decode(IntegralHead.merge_flipped(out, mirrored, P), 6.0)["coords"]
    assert torch.allclose(merged, b, atol=2e-3)
    coord_mean = (IntegralHead.decode(out, 6.0)["coords"] + b) / 2
    assert (coord_mean[..., 0] < 0.1).all()               # the old way: far from B


def test_fc_flip_merge_averages_in_the_crops_frame():
    coords = torch.rand(3, 14, 2) - 0.5
    out = {"coords": coords, "visible": torch.randn(3, 14), "sigma": torch.rand(3, 14, 2)}
    mirrored = {"coords": _mirror(coords + 0.02), "visible": out["visible"][:, P], "sigma": out["sigma"][:, P]}
    merged = FCHead.merge_flipped(out, mirrored, P)
    assert torch.allclose(merged["coords"], coords + 0.01, atol=1e-6)
    assert torch.allclose(merged["sigma"], out["sigma"]) and torch.allclose(merged["visible"], out["visible"])
