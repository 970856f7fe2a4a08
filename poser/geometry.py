"""Box -> crop -> model input, and back: the one geometry codec.

Shapes: N instances, K joints. Boxes are COCO `[x, y, w, h]` in image pixels.

Conventions (used by train, eval and annotate alike):
- Image and keypoint coordinates share OpenCV's frame: pixel (row i, column j) has its centre
  at (x=j, y=i). The same 2x3 matrix therefore moves an image (`warp_image`) and its
  keypoints (`transform_points`), with no half-pixel drift between them.
- A crop is a square window of side `side` pixels (the box grown to a square, times a margin)
  centred on `center`, optionally rotated and mirrored, resampled to `size` x `size`.
- The model regresses *normalised* crop coordinates: (u - (size - 1) / 2) / size, so the crop
  window spans [-0.5, 0.5] and 0 is its centre. This is DeepPose's N(y; b) = (y - b_c) / b_side.
"""

from __future__ import annotations

import cv2
import numpy as np

ArrayLike = np.ndarray | list | tuple | float

# A person box made from joints (LSP has no boxes; tracked and searched boxes) is the joints'
# extent grown by this share of its width / height on each side: what `--boxes` users supply.
PERSON_BOX_MARGIN = 0.15


def box_to_square(boxes: ArrayLike, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(..., 4) xywh boxes -> centres (..., 2) and square sides (...,).

    The shorter box side is grown to the longer one (never squashing the person),
    then both are scaled by `margin` so limbs at the box edge stay inside the crop (the
    model's crop margin is `codec.MARGIN`, recorded in every weights file).
    """
    b = np.asarray(boxes, dtype=np.float64)
    center = b[..., :2] + b[..., 2:4] / 2.0
    side = np.maximum(b[..., 2], b[..., 3]) * margin
    return center, side


def crop_matrix(
    center: ArrayLike,
    side: ArrayLike,
    size: int,
    rotation: ArrayLike = 0.0,
    flip: ArrayLike = False,
) -> np.ndarray:
    """Affine matrices (..., 2, 3) from image pixels to crop pixels.

    rotation: degrees, positive turns the image content counter-clockwise in the crop
    (as cv2.getRotationMatrix2D). flip: mirror the crop left-right; the caller swaps
    left/right joint labels with `Skeleton.flip_index`, which is data, not geometry.
    """
    c = np.asarray(center, dtype=np.float64)
    side, rot, flip = np.broadcast_arrays(
        np.asarray(side, np.float64), np.asarray(rotation, np.float64), np.asarray(flip, bool)
    )
    shape = np.broadcast_shapes(c.shape[:-1], side.shape)
    c = np.broadcast_to(c, shape + (2,))
    s = np.broadcast_to(size / side, shape)
    t = np.deg2rad(np.broadcast_to(rot, shape))
    sx = np.where(np.broadcast_to(flip, shape), -s, s)
    cos, sin = np.cos(t), np.sin(t)
    # u = S * R * F * (p - c) + (size - 1) / 2 with F mirroring x before the rotation.
    m = np.empty(shape + (2, 3))
    m[..., 0, 0] = cos * sx
    m[..., 0, 1] = sin * s
    m[..., 1, 0] = -sin * sx
    m[..., 1, 1] = cos * s
    mid = (size - 1) / 2.0
    m[..., :, 2] = mid - np.einsum("...ij,...j->...i", m[..., :, :2], c)
    return m


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Exact inverse of (..., 2, 3) affine matrices."""
    m = np.asarray(m, dtype=np.float64)
    a_inv = np.linalg.inv(m[..., :, :2])
    out = np.empty_like(m)
    out[..., :, :2] = a_inv
    out[..., :, 2] = -np.einsum("...ij,...j->...i", a_inv, m[..., :, 2])
    return out


def transform_points(m: np.ndarray, points: ArrayLike) -> np.ndarray:
    """Apply (..., 2, 3) matrices to (..., K, 2) points."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    return np.einsum("...ij,...kj->...ki", m[..., :, :2], p) + m[..., None, :, 2]


def normalize(points: ArrayLike, size: int) -> np.ndarray:
    """Crop pixels -> normalised crop coordinates in [-0.5, 0.5] (the regression target)."""
    return (np.asarray(points, dtype=np.float64) - (size - 1) / 2.0) / size


def denormalize(points: ArrayLike, size: int) -> np.ndarray:
    """Normalised crop coordinates -> crop pixels."""
    return np.asarray(points, dtype=np.float64) * size + (size - 1) / 2.0


def to_image(m: np.ndarray, normalized: ArrayLike, size: int) -> np.ndarray:
    """Model output (..., K, 2) normalised crop coordinates -> image pixels."""
    return transform_points(invert_affine(m), denormalize(normalized, size))


def warp_image(
    image: np.ndarray, m: np.ndarray, size: int, border: int | tuple = 0
) -> np.ndarray:
    """Resample `image` into the size x size crop given by the 2x3 matrix `m`.

    Strong down-scaling (a 4K frame into a 128 px crop) would alias with bilinear
    sampling alone, so the covered region is first area-averaged to about twice the
    final resolution and the matrix adjusted; the keypoint mapping is unchanged.
    """
    m = np.asarray(m, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5],
                            [size - 0.5, size - 0.5]])
        src = transform_points(invert_affine(m), corners)
        h, w = image.shape[:2]
        x0, y0 = np.clip(np.floor(src.min(0)).astype(int) - 1, 0, [w, h])
        x1, y1 = np.clip(np.ceil(src.max(0)).astype(int) + 2, 0, [w, h])
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            roi = image[y0:y1, x0:x1]
            f = 2.0 * scale
            nw, nh = max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))
            small = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
            fx, fy = nw / (x1 - x0), nh / (y1 - y0)
            # cv2.resize maps source x to (x + 0.5) * f - 0.5 (pixel centres aligned).
            r = np.array([[fx, 0, (0.5 - x0) * fx - 0.5], [0, fy, (0.5 - y0) * fy - 0.5]])
            m = _compose(m, invert_affine(r))
            image = small
    if isinstance(border, int) and image.ndim == 3:
        border = (border,) * image.shape[2]
    return cv2.warpAffine(
        image, m, (size, size), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=border,
    )


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matrix of `a` after `b` (apply b first)."""
    out = np.empty((2, 3))
    out[:, :2] = a[:, :2] @ b[:, :2]
    out[:, 2] = a[:, :2] @ b[:, 2] + a[:, 2]
    return out


def keypoint_box(keypoints: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(N, K, 3) keypoints -> (N, 4) xywh box around the labelled joints (v > 0),
    grown by `margin` x width/height on each side. Instances with no labelled joint get zeros.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    lab = kp[..., 2] > 0
    big = np.inf
    x0 = np.where(lab, kp[..., 0], big).min(-1)
    y0 = np.where(lab, kp[..., 1], big).min(-1)
    x1 = np.where(lab, kp[..., 0], -big).max(-1)
    y1 = np.where(lab, kp[..., 1], -big).max(-1)
    w, h = x1 - x0, y1 - y0
    box = np.stack([x0 - margin * w, y0 - margin * h, w * (1 + 2 * margin), h * (1 + 2 * margin)], -1)
    return np.where(lab.any(-1)[..., None], box, 0.0)


def grid_theta(m: np.ndarray, in_wh: tuple[int, int], out_size: int) -> np.ndarray:
    """The `F.affine_grid` theta (..., 2, 3) that resamples like `warp_image` with matrix `m`.

    affine_grid maps output coordinates in [-1, 1] (pixel edges, align_corners=False) to
    input coordinates in [-1, 1]; this composes those normalisations with the inverse of `m`,
    so the GPU warp and OpenCV agree on where every pixel goes.
    """
    w, h = in_wh
    inv = invert_affine(m)
    a_out = np.array([[out_size / 2, 0, (out_size - 1) / 2], [0, out_size / 2, (out_size - 1) / 2], [0, 0, 1]])
    a_in = np.array([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]])
    full = np.broadcast_to(np.eye(3), inv.shape[:-2] + (3, 3)).copy()
    full[..., :2, :] = inv
    return (a_in @ full @ a_out)[..., :2, :]


def warp_batch(images, m: np.ndarray, out_size: int):
    """Resample a (N, C, H, W) float tensor into N crops (N, C, S, S) on its own device;
    m: (N, 2, 3) image-to-crop matrices, as for `warp_image`."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = images.shape
    theta = torch.as_tensor(grid_theta(m, (w, h), out_size), dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta, [n, c, out_size, out_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
