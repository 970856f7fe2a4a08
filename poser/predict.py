"""Inference: a weights file + person boxes -> keypoints in the source pixels, with scores.

One `Predictor` serves eval (prepared caches), annotate (photos and video frames) and the
training loop's validation. Crops come from the shared geometry: `crop_matrices` without
augmentation, i.e. exactly the crop the model was trained around. Flip test averages the
prediction with that of the mirrored crop (labels swapped back through the skeleton).

Shapes: N person boxes, K joints. Scores are in [0, 1]: the visibility probability, times
1 - mean sigma when the model has an RLE sigma head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from poser import geometry as g
from poser.data.cache import Cache
from poser.errors import PoserError
from poser.models.deeppose import DeepPose, load_model
from poser.skeletons import Skeleton, get_skeleton

DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "reference.safetensors"


def resolve_weights(path: str | Path | None) -> Path:
    """The weights to use: `path`, or the reference model shipped inside the package."""
    if path is not None:
        return Path(path)
    if not DEFAULT_WEIGHTS.is_file():
        raise PoserError("no --weights given and this install ships no reference model; pass --weights FILE")
    return DEFAULT_WEIGHTS


class Predictor:
    def __init__(self, model: DeepPose, meta: dict, device: str | torch.device = "cpu",
                 channels_last: bool = True) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.meta, self.channels_last = meta, channels_last
        self.size = int(meta["input_size"])
        self.margin = float(meta.get("margin", 1.25))
        self.skeleton: Skeleton = get_skeleton(meta["skeleton"])
        self._mean = torch.tensor(meta.get("mean", (0.485, 0.456, 0.406)), device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(meta.get("std", (0.229, 0.224, 0.225)), device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_file(cls, path: Path, device: str | torch.device = "cpu") -> Predictor:
        model, meta = load_model(path, device)
        return cls(model, meta, device)

    # --- crops -> keypoints ----------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, crops: torch.Tensor, m: np.ndarray) -> dict[str, np.ndarray]:
        """crops (N, 3, S, S) float RGB in [0, 1] on the device, m (N, 2, 3) source-to-crop."""
        x = (crops - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model(x)
        res = {"coords": g.to_image(m, out["coords"].float().cpu().numpy(), self.size),
               "visible": torch.sigmoid(out["visible"].float()).cpu().numpy()}
        score = res["visible"]
        if "sigma" in out:
            res["sigma"] = out["sigma"].float().mean(-1).cpu().numpy()
            score = score * np.clip(1 - res["sigma"], 0, 1)
        res["score"] = score
        return res

    def _predict(self, crop_fn, boxes: np.ndarray, flip: bool) -> dict[str, np.ndarray]:
        center, side = g.box_to_square(boxes, self.margin)
        m = g.crop_matrix(center, side, self.size)
        res = self._forward(crop_fn(m), m)
        if flip:
            mf = g.crop_matrix(center, side, self.size, 0.0, True)
            rf = self._forward(crop_fn(mf), mf)
            p = self.skeleton.flip_index
            res = {k: (v + rf[k][:, p]) / 2 for k, v in res.items()}
        return res

    def predict_batch(self, images: torch.Tensor, boxes: np.ndarray, flip: bool = False) -> dict[str, np.ndarray]:
        """images (N, 3, H, W) uint8 RGB (one per box, same size), boxes (N, 4) xywh in them.
        Crops on the device with grid_sample: right for prepared crops and modest scaling."""
        images = images.to(self.device)

        def crops(m):
            return g.warp_batch(images.float().div_(255), m, self.size)

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
            empty = {"coords": np.zeros((0, k, 2)), "visible": np.zeros((0, k)), "score": np.zeros((0, k))}
            return [dict(empty) for _ in images]

        def crops(m):
            arr = np.stack([g.warp_image(images[o], mi, self.size) for o, mi in zip(owner, m, strict=True)])
            return torch.from_numpy(arr).to(self.device).permute(0, 3, 1, 2).float().div_(255)

        res = self._predict(crops, np.concatenate(boxes), flip)
        cuts = np.cumsum(counts)[:-1]
        return [{k: v for k, v in zip(res, parts, strict=True)}
                for parts in zip(*(np.split(v, cuts) for v in res.values()), strict=True)]

    def predict_cache(self, cache: Cache, flip: bool = False, batch_size: int = 64,
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


def cache_to_image(cache: Cache, coords: np.ndarray) -> np.ndarray:
    """Cache-crop pixel coordinates (N, K, 2) -> original image pixels."""
    return g.transform_points(g.invert_affine(cache.matrix[: len(coords)]), coords)
