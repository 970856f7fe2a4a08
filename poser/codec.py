"""The codec: between a person in an image and what the model sees and says, both ways.

Encode (training and inference alike): a person box becomes the model's crop (the box grown
to a square x `MARGIN`, geometry's `box_to_square` and `crop_matrix`), the crop becomes the normalised input (`MEAN`,
`STD`, `normalize_input`), and labelled keypoints become the regression targets, normalised
crop coordinates in [-0.5, 0.5] (`encode_keypoints`). Decode (inference and validation): the
head turns raw output into normalised coordinates and scores (`models/heads.py`, each head's
`decode`), and `to_pixels` maps them back through the crop into image pixels.

Shapes: N crops, K joints, S model input side.
"""

from __future__ import annotations

import numpy as np
import torch

from poser import geometry as g

MEAN = (0.485, 0.456, 0.406)   # ImageNet RGB statistics: the backbones' convention
STD = (0.229, 0.224, 0.225)
MARGIN = 1.25                  # model crop = person box grown to a square x MARGIN


def normalize_input(x: torch.Tensor, mean=MEAN, std=STD, channels_last: bool = False) -> torch.Tensor:
    """(N, 3, S, S) RGB in [0, 1] -> normalised model input (ImageNet statistics unless a
    weights file says otherwise)."""
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    x = x.sub(m).div_(s)           # one new tensor, not two: a share of CPU inference
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def pixels_to_input(crops: np.ndarray, mean=MEAN, std=STD, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 RGB crops (N, S, S, 3) -> the normalised network input (N, 3, S, S) on `device`."""
    x = torch.from_numpy(crops).to(device).permute(0, 3, 1, 2).float().div_(255)
    return normalize_input(x, mean, std)


def encode_keypoints(m: np.ndarray, keypoints: np.ndarray, size: int) -> np.ndarray:
    """Image keypoints (N, K, 2) through the crops m (N, 2, 3) -> normalised crop coordinates."""
    return g.normalize(g.transform_points(m, keypoints), size)


def to_pixels(decoded: dict[str, torch.Tensor], m: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A head's decoded output (coords (N, K, 2) normalised, score and visible (N, K)) for the
    crops m (N, 2, 3) -> coords in image pixels, score and visible probability, as numpy."""
    return (g.to_image(m, decoded["coords"].float().cpu().numpy(), size),
            decoded["score"].float().cpu().numpy(), decoded["visible"].float().cpu().numpy())
