"""The decode and the flip test: the codec merges the raw outputs of a crop and of its mirror
image before its one decode (poser/codec.py, used by the Predictor), for each head of
poser/models/heads.py."""

import numpy as np
import torch

from poser import codec
from poser.codec import DECODE_RADIUS, HEATMAP_SIGMA, SCORE_RADIUS, decode_outputs
from poser.models.heads import HEAD_TYPES, IntegralHead, heatmap_grid
from poser.skeletons import LSP14

P = np.asarray(LSP14.flip_index)


def _mirror(t: np.ndarray) -> np.ndarray:
    """Targets (N, K, 2) as the mirrored crop sees them: x negated, left/right relabelled."""
    return (t * np.float32([-1.0, 1.0]))[:, P]


def _targets(t, shape) -> np.ndarray:
    """Training's Gaussian heatmap targets (N, K, h, w) for normalised points (N, K, 2)."""
    return IntegralHead.encode(torch.as_tensor(np.asarray(t, np.float32)), shape).numpy()


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(p, 1e-30))      # logits of a distribution with cells of probability 0


def test_the_codec_decodes_exactly_the_heads_models_build():
    assert tuple(HEAD_TYPES) == codec.HEADS


def test_the_cell_centres_are_the_heads_grid():
    x, y = heatmap_grid(20, 24, "cpu")
    assert np.array_equal(x.numpy(), codec.cell_centres(24)) and np.array_equal(y.numpy(), codec.cell_centres(20))


def test_integral_flip_merge_of_a_consistent_pair_is_the_prediction():
    rng = np.random.default_rng(0)
    target = rng.random((2, 14, 2), np.float32) * 0.6 - 0.3   # inside the crop: a Gaussian cut by the border is biased
    shape = (32, 24)
    out = {"heatmap": _log(_targets(target, shape)), "visible": rng.standard_normal((2, 14), np.float32)}
    mirrored = {"heatmap": _log(_targets(_mirror(target), shape)), "visible": out["visible"][:, P]}
    merged = decode_outputs("integral", out, mirrored, P)
    assert np.allclose(merged["coords"], decode_outputs("integral", out)["coords"], atol=1e-4)
    assert np.allclose(merged["coords"], target, atol=2e-3)
    assert np.allclose(merged["visible"], 1 / (1 + np.exp(-out["visible"])), atol=1e-6)


def test_integral_flip_merge_averages_heatmaps_not_coordinates():
    # One view is split between two places (55% at A, 45% at B), the mirrored view sees B only:
    # the merged heatmap holds B at 72.5%, so the decode says B. Averaging the two views'
    # coordinates would have put the joint between A and B, where neither view saw it.
    a, b = np.zeros((1, 14, 2), np.float32), np.zeros((1, 14, 2), np.float32)
    a[..., 0], b[..., 0] = -0.3, 0.3
    shape = (32, 32)
    out = {"heatmap": _log(0.55 * _targets(a, shape) + 0.45 * _targets(b, shape)), "visible": np.zeros((1, 14))}
    mirrored = {"heatmap": _log(_targets(_mirror(b), shape)), "visible": np.zeros((1, 14))}
    merged = decode_outputs("integral", out, mirrored, P, 6.0)["coords"]
    assert np.allclose(merged, b, atol=2e-3)
    coord_mean = (decode_outputs("integral", out, radius=6.0)["coords"] + b) / 2
    assert (coord_mean[..., 0] < 0.1).all()               # the old way: far from B


def test_fc_flip_merge_averages_in_the_crops_frame():
    rng = np.random.default_rng(1)
    coords = rng.random((3, 14, 2), np.float32) - 0.5
    out = {"coords": coords, "visible": rng.standard_normal((3, 14), np.float32),
           "sigma": rng.random((3, 14, 2), np.float32)}
    mirrored = {"coords": _mirror(coords + 0.02), "visible": out["visible"][:, P], "sigma": out["sigma"][:, P]}
    merged, single = decode_outputs("fc", out, mirrored, P), decode_outputs("fc", out)
    assert np.allclose(merged["coords"], coords + 0.01, atol=1e-6)
    assert np.allclose(merged["score"], single["score"]) and np.allclose(merged["visible"], single["visible"])
    # score = P(visible) x (1 - mean sigma)
    assert np.allclose(single["score"], single["visible"] * (1 - out["sigma"].mean(-1)), atol=1e-6)


def test_integral_decode_finds_a_peak_and_scores_sharpness():
    target = np.float32([[[0.2, -0.3], [-0.1, 0.05]]])                 # (1, K=2, 2) normalised
    sharp = {"heatmap": _log(_targets(target, (32, 32))), "visible": np.full((1, 2), 20.0)}
    dec = decode_outputs("integral", sharp)
    assert np.allclose(dec["coords"], target, atol=1e-3)               # the expectation of the target is it
    assert np.allclose(dec["score"], 0.86, atol=0.02)                  # mass within 2 sigma
    flat = decode_outputs("integral", {"heatmap": np.zeros((1, 2, 32, 32)), "visible": np.full((1, 2), 20.0)})
    assert dec["score"].min() > 0.8 and flat["score"].max() < 0.1       # spread out: the model does not know
    assert np.allclose(flat["coords"], 0, atol=1e-6)


def test_integral_decode_takes_the_expectation_around_the_stronger_mode():
    # Two modes, 60% at x=+0.3 and 40% at x=-0.3 (a left/right confusion): the whole map's
    # expectation lies between them (x = 0.06), on neither; the decode stays on the stronger.
    prob = 0.6 * _targets([[[0.3, 0.0]]], (32, 32)) + 0.4 * _targets([[[-0.3, 0.0]]], (32, 32))
    assert abs(float(codec.expectation(prob)[0, 0, 0]) - 0.06) < 0.01
    dec = decode_outputs("integral", {"heatmap": _log(prob), "visible": np.zeros((1, 1))}, radius=DECODE_RADIUS)
    assert np.allclose(dec["coords"], [[[0.3, 0.0]]], atol=2e-3)
    whole = decode_outputs("integral", {"heatmap": _log(prob), "visible": np.zeros((1, 1))})   # no radius
    assert abs(float(whole["coords"][0, 0, 0]) - 0.06) < 0.01
    # The window is a disc of DECODE_RADIUS cells around the peak, renormalised: against the
    # dense computation over the whole map, peaks at the map's edges included.
    rng = np.random.default_rng(2)
    prob = codec.softmax(rng.standard_normal((2, 3, 20, 24), np.float32) * 3)
    prob[0, 0, 0, 0] = prob[1, 2, 19, 23] = 1.0
    peak = prob.reshape(2, 3, -1).argmax(-1)
    ys, xs = np.meshgrid(np.arange(20), np.arange(24), indexing="ij")
    near = ((ys - (peak // 24)[..., None, None]) ** 2 + (xs - (peak % 24)[..., None, None]) ** 2) <= DECODE_RADIUS ** 2
    dense = codec.expectation(prob * near / (prob * near).sum((-2, -1), keepdims=True))
    assert np.allclose(codec.local(prob), dense, atol=1e-6)
    # The score's mass: the cells within SCORE_RADIUS sigmas of the estimate, also against dense.
    coords = rng.random((2, 3, 2), np.float32) - 0.5
    x, y = codec.cell_centres(24), codec.cell_centres(20)
    d2 = ((x - coords[..., :1]) * 24)[..., None, :] ** 2 + ((y - coords[..., 1:]) * 20)[..., :, None] ** 2
    dense_mass = (prob * (d2 <= (SCORE_RADIUS * HEATMAP_SIGMA) ** 2)).sum((-2, -1))
    assert np.allclose(codec.mass_near(prob, coords), dense_mass, atol=1e-6)


def test_the_decode_matches_the_networks_own_expectation():
    # The integral head's forward computes its whole-map expectation in torch (what training
    # regresses and export carries); the codec's numpy decode of its heatmap must agree.
    from poser.models.deeppose import create_model

    model = create_model("mobilenet_v3_small", 14, head="integral").eval()
    with torch.no_grad():
        out = {k: v.numpy() for k, v in model(torch.randn(2, 3, 128, 128) * 3).items()}
    assert np.allclose(decode_outputs("integral", out)["coords"], out["coords"], atol=1e-5)
