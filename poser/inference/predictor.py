"""Inference: a weights file + person boxes -> keypoints in the source pixels, with scores.

One `Predictor` serves eval (prepared caches), annotate (photos and video frames) and the
training loop's validation. Crops come from the shared geometry (`box_to_square` with the
weights file's margin, `crop_matrix`): the crop training makes before augmenting. Prepared
caches are cropped with `warp_batch` (grid_sample, as in training); photos and video frames
with `warp_image` (OpenCV, area-averaged when a large frame shrinks to a small crop). Flip test
merges the raw outputs of the crop and of its mirror image (labels swapped back through the
skeleton) before the head's one decode.

Shapes: N person boxes, K joints. Scores are in [0, 1], decoded by the model's head
(models/heads.py says what they mean for each head).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from poser import geometry as g
from poser.codec import MARGIN, MEAN, STD, decode, normalize_input
from poser.errors import PoserError
from poser.inference.cascade import SUB_IMAGE, joint_boxes, pose_diameter
from poser.models.deeppose import DeepPose, load_stages
from poser.skeletons import Skeleton, get_skeleton

DEFAULT_WEIGHTS = Path(__file__).parents[1] / "weights" / "reference.safetensors"


def resolve_weights(path: str | Path | None) -> Path:
    """The weights to use: `path`, or the reference model shipped inside the package."""
    if path is not None:
        return Path(path)
    if not DEFAULT_WEIGHTS.is_file():
        raise PoserError("no --weights given and this install ships no reference model; pass --weights FILE")
    return DEFAULT_WEIGHTS


SEARCH_ROUNDS = 3       # person search: passes after the whole-image one (measured: README)
SEARCH_FIRST_MARGIN = 0.4   # the first searched box is grown this much a side, narrowing to the training boxes' 15%
MIN_SEARCH_SIDE = 8.0   # px: a searched box is never thinner (a zero-size crop has no scale)


def search_margin(k: int, rounds: int) -> float:
    """Growth a side of pass k's box (of `rounds`): wide while the estimate is rough, the
    training boxes' `PERSON_BOX_MARGIN` at the last pass (measured better than 15% throughout:
    a first box cut at the knees cannot find the ankles)."""
    if rounds <= 1 or k >= rounds - 1:
        return g.PERSON_BOX_MARGIN
    return SEARCH_FIRST_MARGIN + (g.PERSON_BOX_MARGIN - SEARCH_FIRST_MARGIN) * k / (rounds - 1)


def search_box(coords: np.ndarray, margin: float = g.PERSON_BOX_MARGIN) -> np.ndarray:
    """(4,) xywh person box from one pose (K, 2): the extent of all its joints (measured
    better than only the confident ones) grown by `margin` of its size on each side."""
    kp = np.concatenate([coords, np.ones((len(coords), 1))], -1)[None]
    box = g.keypoint_box(kp, margin)[0]
    grow = np.maximum(MIN_SEARCH_SIDE - box[2:], 0)           # a collapsed pose: a small box, never 0
    return np.concatenate([box[:2] - grow / 2, box[2:] + grow])


class Predictor:
    """A model (stage one) and optionally refinement stages 2..S (a cascade)."""

    def __init__(self, model: DeepPose, meta: dict, device: str | torch.device = "cpu",
                 channels_last: bool = True, refiners: list[tuple[DeepPose, dict]] = ()) -> None:
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.stages = [(self._prepare(model), meta)] + [(self._prepare(m), mt) for m, mt in refiners]
        self.model, self.meta = self.stages[0]
        self.size = int(meta["input_size"])
        self.margin = float(meta.get("margin", MARGIN))
        self.skeleton: Skeleton = get_skeleton(meta["skeleton"])
        self.mean, self.std = tuple(meta.get("mean", MEAN)), tuple(meta.get("std", STD))

    def _prepare(self, model: DeepPose) -> DeepPose:
        model = model.to(self.device).eval()
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    @classmethod
    def from_file(cls, path: Path, device: str | torch.device = "cpu", stages: int | None = None) -> Predictor:
        """A weights file or cascade bundle; `stages` runs only the first N stages."""
        loaded = load_stages(path, device, stages)
        return cls(loaded[0][0], loaded[0][1], device, refiners=loaded[1:])

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    # --- crops -> keypoints ----------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, model: DeepPose, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        """crops (N, 3, S, S) float RGB in [0, 1] on the device -> the head's raw outputs."""
        return model(normalize_input(crops, self.mean, self.std, self.channels_last))

    def _stage(self, s: int, crop_fn, boxes: np.ndarray, owner: np.ndarray, flip: bool,
               chunk: int = 128) -> dict[str, np.ndarray]:
        """Stage s on crops around `boxes` (M, 4) of the images `owner` (M,) points into."""
        model, meta = self.stages[s]
        size, margin = int(meta["input_size"]), float(meta.get("margin", self.margin))
        center, side = g.box_to_square(boxes, margin)
        parts = []
        for a in range(0, len(boxes), chunk):
            sl = slice(a, a + chunk)
            m = g.crop_matrix(center[sl], side[sl], size)
            out, mirrored = self._forward(model, crop_fn(m, owner[sl], size)), None
            if flip:    # the mirrored crop; the head merges both outputs before its one decode
                mf = g.crop_matrix(center[sl], side[sl], size, 0.0, True)
                mirrored = self._forward(model, crop_fn(mf, owner[sl], size))
            raw = model.decode(out, mirrored, self.skeleton.flip_index, meta.get("decode_radius"))
            parts.append(decode(raw, m, size))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _predict(self, crop_fn, boxes: np.ndarray, flip: bool) -> dict[str, np.ndarray]:
        n, k = len(boxes), self.skeleton.num_joints
        res = self._stage(0, crop_fn, boxes, np.arange(n), flip)
        history = [res["coords"]]
        for s in range(1, self.num_stages):
            # Stage s: a sub-image around every joint's current estimate; row j of the crop
            # around joint j is the refined joint j.
            sigma = float(self.stages[s][1].get("sub_image", SUB_IMAGE))
            diam = pose_diameter(res["coords"], self.skeleton)
            jb = joint_boxes(res["coords"], np.repeat(diam[:, None], k, 1), sigma,
                             float(self.stages[s][1].get("margin", self.margin)))
            r = self._stage(s, crop_fn, jb.reshape(-1, 4), np.repeat(np.arange(n), k), flip)
            rows = np.arange(n * k), np.tile(np.arange(k), n)
            res = {key: r[key][rows].reshape(n, k, *r[key].shape[2:]) for key in ("coords", "score", "visible")}
            history.append(res["coords"])
        res["stages"] = np.stack(history, 1)          # (N, S, K, 2): the estimate after each stage
        return res

    def predict_batch(self, images: torch.Tensor, boxes: np.ndarray, flip: bool = False) -> dict[str, np.ndarray]:
        """images (N, 3, H, W) uint8 RGB (one per box, same size), boxes (N, 4) xywh in them.
        Crops on the device with grid_sample: right for prepared crops and modest scaling."""
        images = images.to(self.device).float().div_(255)    # once: refinement stages crop each image K times

        def crops(m, owner, size):
            return g.warp_batch(images[torch.as_tensor(owner, device=images.device)], m, size)

        return self._predict(crops, np.asarray(boxes, np.float64), flip)

    def predict_image(self, image: np.ndarray, boxes: np.ndarray, flip: bool = False) -> dict[str, np.ndarray]:
        """image (H, W, 3) uint8 RGB of any size, boxes (N, 4) xywh in it."""
        return self.predict_images([image], [boxes], flip)[0]

    def predict_images(self, images: list[np.ndarray], boxes: list[np.ndarray],
                       flip: bool = False) -> list[dict[str, np.ndarray]]:
        """Several images of any sizes, each with its boxes, in one batch through the model.
        Crops with OpenCV, which area-averages strong down-scaling (a 4K frame to a 128 px
        crop stays sharp, not aliased)."""
        boxes = [np.asarray(b, np.float64).reshape(-1, 4) for b in boxes]
        counts = [len(b) for b in boxes]
        owner = np.repeat(np.arange(len(images)), counts)
        if owner.size == 0:
            k = self.skeleton.num_joints
            empty = {"coords": np.zeros((0, k, 2)), "score": np.zeros((0, k)), "visible": np.zeros((0, k)),
                     "stages": np.zeros((0, self.num_stages, k, 2))}
            return [dict(empty) for _ in images]

        def crops(m, rows, size):
            arr = np.stack([g.warp_image(images[owner[r]], mi, size) for r, mi in zip(rows, m, strict=True)])
            return torch.from_numpy(arr).to(self.device).permute(0, 3, 1, 2).float().div_(255)

        res = self._predict(crops, np.concatenate(boxes), flip)
        cuts = np.cumsum(counts)[:-1]
        return [{k: v for k, v in zip(res, parts, strict=True)}
                for parts in zip(*(np.split(v, cuts) for v in res.values()), strict=True)]

    def search(self, images: list[np.ndarray], rounds: int = SEARCH_ROUNDS,
               flip: bool = False) -> list[dict[str, np.ndarray]]:
        """Find the one person in each whole image (H, W, 3) uint8 RGB, with no box given:
        predict with the whole image as the box (DeepPose's own LSP protocol), then `rounds`
        times again with the box of the predicted joints, grown wide at first and as training
        boxes are at the last pass (`search_box`, `search_margin`). Each result also holds
        `box` (1, 4), the box of its last pass."""
        boxes = [np.array([[0.0, 0.0, im.shape[1], im.shape[0]]]) for im in images]
        res = self.predict_images(images, boxes, flip)
        for k in range(rounds):
            boxes = [search_box(r["coords"][0], search_margin(k, rounds))[None] for r in res]
            res = self.predict_images(images, boxes, flip)
        return [dict(r, box=b) for r, b in zip(res, boxes, strict=True)]

    def predict_cache(self, cache, flip: bool = False, batch_size: int = 64,
                      limit: int | None = None, progress=None) -> dict[str, np.ndarray]:
        """Every instance of a prepared cache (the first `limit`), in cache-crop pixels (the
        frame of cache.keypoints); `cache.matrix` maps them back to the original image."""
        n = len(cache) if limit is None else min(len(cache), limit)
        parts = []
        for s in range(0, n, batch_size):
            idx = np.arange(s, min(n, s + batch_size))
            imgs = torch.stack([cache.image(i) for i in idx])
            parts.append(self.predict_batch(imgs, cache.boxes[idx], flip))
            if progress is not None:
                progress(len(idx))
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def cache_to_image(cache, coords: np.ndarray) -> np.ndarray:
    """Cache-crop pixel coordinates (N, K, 2) -> original image pixels."""
    return g.transform_points(g.invert_affine(cache.matrix[: len(coords)]), coords)
