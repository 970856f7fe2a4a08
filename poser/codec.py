"""The codec: between a person in an image and what the model sees and says, both ways.

Encode (training and inference alike): a person box becomes the model's crop (the box grown
to a square x `MARGIN`, geometry's `box_to_square` and `crop_matrix`), the crop becomes the
normalised input (`MEAN`, `STD`: `normalize_input` for float tensors, `pixels_to_input` for
uint8 crops), and labelled keypoints become the regression targets, normalised crop
coordinates in [-0.5, 0.5] (`encode_keypoints`; the integral head's heatmap targets are
`models.heads.IntegralHead.encode`).

Decode (inference and validation): `decode_outputs` turns a head's raw outputs, from torch or
any runtime, into normalised coordinates and scores, merging a flip test's mirrored outputs
first; `to_pixels` maps them back through the crop into image pixels. The decode is numpy, so
inference on an exported network never imports torch (a second and a half of every command).

- `fc` (DeepPose as published): coordinates regressed directly. Score = P(visible) x
  (1 - mean RLE sigma), or just P(visible) without a sigma output.
- `integral`: K heatmap logits (N, K, h, w) whose spatial softmax's expectation is the joint.
  Score = P(visible) x the heatmap's probability mass within `SCORE_RADIUS` target sigmas of
  the estimate: 0.86 for a heatmap exactly like its training target, near 0 for a heatmap
  spread over the crop (the model does not know).

Shapes: N crops, K joints, S model input side, h x w heatmap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from poser import geometry as g
from poser.errors import PoserError

if TYPE_CHECKING:
    import torch

MEAN = (0.485, 0.456, 0.406)   # ImageNet RGB statistics: the backbones' convention
STD = (0.229, 0.224, 0.225)
MARGIN = 1.25                  # model crop = person box grown to a square x MARGIN
HEADS = ("fc", "integral")     # the head kinds (models/heads.py builds them, decode_outputs reads them)
HEATMAP_SIGMA = 1.5            # integral head: target Gaussian sigma, in heatmap cells
SCORE_RADIUS = 2.0             # confidence = heatmap mass within this many sigmas of the estimate
DECODE_RADIUS = 6.0            # the shipped model's decode radius, in cells (measured: docs)


# --- encode --------------------------------------------------------------------------------

def normalize_input(x: torch.Tensor, mean=MEAN, std=STD, channels_last: bool = False) -> torch.Tensor:
    """(N, 3, S, S) RGB in [0, 1] -> normalised model input (ImageNet statistics unless a
    weights file says otherwise)."""
    import torch

    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    x = x.sub(m).div_(s)           # one new tensor, not two: a share of CPU inference
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def pixels_to_input(crops: np.ndarray, mean=MEAN, std=STD) -> np.ndarray:
    """uint8 RGB crops (N, S, S, 3) -> the normalised network input (N, 3, S, S) float32."""
    scale = np.float32(255) * np.asarray(std, np.float32)
    x = (crops.astype(np.float32) - np.float32(255) * np.asarray(mean, np.float32)) / scale
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def encode_keypoints(m: np.ndarray, keypoints: np.ndarray, size: int) -> np.ndarray:
    """Image keypoints (N, K, 2) through the crops m (N, 2, 3) -> normalised crop coordinates."""
    return g.normalize(g.transform_points(m, keypoints), size)


def cell_centres(n: int) -> np.ndarray:
    """Normalised crop coordinates of n heatmap cell centres along one side (n,): cell j
    covers [j / n, (j + 1) / n) of the crop, so its centre is (j + 0.5) / n - 0.5 whatever S is."""
    return ((np.arange(n, dtype=np.float32) + 0.5) / n - 0.5).astype(np.float32)


# --- decode --------------------------------------------------------------------------------

def decode_outputs(head: str, out: dict, mirrored: dict | None = None, flip_index=None,
                   radius: float | None = None) -> dict[str, np.ndarray]:
    """The one decode: raw outputs of head kind `head` (numpy arrays) -> coords (N, K, 2)
    normalised, score and visible (N, K) in [0, 1]. With `mirrored` (the raw outputs of the
    mirrored crops, joints relabelled by `flip_index`): the flip test, both merged before the
    decode. `radius`: the weights file's `decode_radius` (integral head)."""
    if head == "fc":
        return _decode_fc(out if mirrored is None else merge_fc(out, mirrored, flip_index))
    if head != "integral":
        raise PoserError(f"unknown head {head!r} (known: {', '.join(HEADS)})")
    views = [heatmap_view(out)] + ([heatmap_view(mirrored, flip_index)] if mirrored is not None else [])
    return decode_views(views, radius)


def heatmap_view(out: dict, flip_index=None) -> tuple[np.ndarray, np.ndarray]:
    """An integral head's raw outputs -> one view for `decode_views`: probabilities (N, K, h, w)
    and visibility logits (N, K). With `flip_index`, `out` is of the mirrored crop: its maps are
    mirrored back (the mirror crop is exact: cell j <-> w - 1 - j) and its joints relabelled."""
    prob, vis = softmax(out["heatmap"]), np.asarray(out["visible"], np.float32)
    if flip_index is None:
        return prob, vis
    return np.ascontiguousarray(prob[:, flip_index, :, ::-1]), vis[:, flip_index]


def decode_views(views: list[tuple[np.ndarray, np.ndarray]], radius: float | None = None) -> dict[str, np.ndarray]:
    """Views of the same crops (`heatmap_view`s, in one crop frame) -> one decode. Views are
    averaged as probabilities before it, so a joint that one view places on the wrong limb
    cannot drag the mean between two."""
    prob = sum(p for p, _ in views) / len(views)
    visible = sigmoid(sum(v for _, v in views) / len(views))
    coords = local(prob, radius) if radius else expectation(prob)
    return {"coords": coords, "score": visible * mass_near(prob, coords), "visible": visible}


def resample_view(view: tuple[np.ndarray, np.ndarray], m_from: np.ndarray, m_to: np.ndarray, size: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A view of crops `m_from` (N, 2, 3) -> the same view in the frame of crops `m_to` (another
    box of the same images, size `size`): each map sampled bilinearly at the cells of the new
    crop and renormalised (mass beyond the old crop is lost). Lets the person search take the
    flip test's mirrored view from the pass before its last (inference/search.py)."""
    prob, vis = view
    n, k, h, w = prob.shape
    cy, cx = np.meshgrid(cell_centres(h), cell_centres(w), indexing="ij")
    cells = np.broadcast_to(np.stack([cx.ravel(), cy.ravel()], -1), (n, h * w, 2))
    src = encode_keypoints(m_from, g.to_image(m_to, cells, size), size)
    fx, fy = (src[..., 0] + 0.5) * w - 0.5, (src[..., 1] + 0.5) * h - 0.5       # in old cells
    x0, y0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    flat = prob.reshape(n, k, h * w)
    out = np.zeros((n, k, h * w), np.float32)
    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
        weight = (1 - np.abs(fx - xi)) * (1 - np.abs(fy - yi)) * ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h))
        idx = (yi.clip(0, h - 1) * w + xi.clip(0, w - 1))[:, None, :]
        out += np.take_along_axis(flat, np.broadcast_to(idx, (n, k, h * w)), 2) * weight[:, None, :].astype(np.float32)
    out /= np.maximum(out.sum(-1, keepdims=True), 1e-12)
    return out.reshape(n, k, h, w), vis


def merge_fc(out: dict, mirrored: dict, flip_index) -> dict[str, np.ndarray]:
    """fc flip test: raw outputs of a crop and of its mirror image -> their average in the
    crop's frame (the mirror's x negated, its joints relabelled)."""
    m = {k: np.asarray(v, np.float32)[:, flip_index] for k, v in mirrored.items()}
    m["coords"] = m["coords"] * np.float32([-1.0, 1.0])
    return {k: (np.asarray(v, np.float32) + m[k]) / 2 for k, v in out.items()}


def _decode_fc(out: dict) -> dict[str, np.ndarray]:
    visible = sigmoid(out["visible"])
    score = visible
    if "sigma" in out:
        score = score * np.clip(1 - np.asarray(out["sigma"], np.float32).mean(-1), 0, 1)
    return {"coords": np.asarray(out["coords"], np.float32), "score": score, "visible": visible}


def sigmoid(x) -> np.ndarray:
    return (0.5 * (1 + np.tanh(0.5 * np.asarray(x, np.float32)))).astype(np.float32)   # no overflow


def softmax(logits) -> np.ndarray:
    """(N, K, h, w) logits -> each map's spatial softmax, float32."""
    z = np.asarray(logits, np.float32)
    n, k, h, w = z.shape
    z = z.reshape(n, k, h * w)
    e = np.exp(z - z.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).reshape(n, k, h, w)


def expectation(prob: np.ndarray) -> np.ndarray:
    """(N, K, h, w) probabilities -> (N, K, 2) expected normalised (x, y)."""
    x, y = cell_centres(prob.shape[-1]), cell_centres(prob.shape[-2])
    return np.stack([(prob.sum(2) * x).sum(-1), (prob.sum(3) * y).sum(-1)], -1)


def local(prob: np.ndarray, radius: float = DECODE_RADIUS) -> np.ndarray:
    """(N, K, h, w) probabilities -> (N, K, 2) their expectation within `radius` cells of
    each map's peak, renormalised. Training regresses the expectation over the whole map, but
    where a map holds two modes (the left and the right wrist, say) that mean lies between
    them, on neither; the local expectation keeps the soft-argmax's sub-cell precision around
    the mode (measured: docs/reference-model.md)."""
    w = prob.shape[-1]
    peak = prob.reshape(*prob.shape[:2], -1).argmax(-1)
    vals, x, y = _window(prob, peak // w, peak % w, *_disc(radius))
    vals = vals / vals.sum(-1, keepdims=True)       # the peak itself is always inside: sum > 0
    return np.stack([(vals * x).sum(-1), (vals * y).sum(-1)], -1)


def mass_near(prob: np.ndarray, coords: np.ndarray, radius: float = SCORE_RADIUS * HEATMAP_SIGMA) -> np.ndarray:
    """(N, K) probability mass of the cells whose centres lie within `radius` cells of
    `coords` (N, K, 2) normalised."""
    h, w = prob.shape[-2:]
    cx, cy = (coords[..., 0] + 0.5) * w - 0.5, (coords[..., 1] + 0.5) * h - 0.5    # in cell units
    half = int(radius) + 1              # a square window holds every cell of the disc
    dy, dx = (t.ravel() for t in np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1), indexing="ij"))
    vals, x, y = _window(prob, np.round(cy).astype(np.int64), np.round(cx).astype(np.int64), dy, dx)
    d2 = ((x - coords[..., :1]) * w) ** 2 + ((y - coords[..., 1:]) * h) ** 2
    return (vals * (d2 <= radius ** 2)).sum(-1)


def _disc(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell offsets (dy, dx), each (D,), within `radius` cells of a cell."""
    r = int(radius)
    dy, dx = (t.ravel() for t in np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij"))
    keep = dy ** 2 + dx ** 2 <= radius ** 2
    return dy[keep], dx[keep]


def _window(prob: np.ndarray, row: np.ndarray, col: np.ndarray, dy: np.ndarray, dx: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cells at offsets (dy, dx) (D,) around cell (row, col) (N, K) of each map: their
    probabilities (N, K, D), 0 off the map, and their centres x, y (N, K, D) normalised. A
    window of ~100 cells instead of the whole map: decoding is a share of CPU inference."""
    h, w = prob.shape[-2:]
    rows, cols = row[..., None] + dy, col[..., None] + dx
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    rows, cols = rows.clip(0, h - 1), cols.clip(0, w - 1)
    vals = np.take_along_axis(prob.reshape(*prob.shape[:2], h * w), rows * w + cols, -1) * inside
    return vals, (cols.astype(np.float32) + 0.5) / w - 0.5, (rows.astype(np.float32) + 0.5) / h - 0.5


def to_pixels(decoded: dict[str, np.ndarray], m: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A decoded output (coords (N, K, 2) normalised, score and visible (N, K)) for the
    crops m (N, 2, 3) -> coords in image pixels, score and visible probability."""
    return g.to_image(m, decoded["coords"], size), decoded["score"], decoded["visible"]
