"""Inference: a weights file + person boxes -> keypoints in the source pixels, with scores.

One `Predictor` serves eval (prepared caches), annotate (photos and video frames) and the
training loop's validation. Crops come from the shared geometry (`box_to_square` with the
weights file's margin, `crop_matrix`): the crop training makes before augmenting. Prepared
caches are cropped with `warp_batch` (grid_sample, as in training); photos and video frames
with `warp_image` (OpenCV, area-averaged when a large frame shrinks to a small crop). Flip test
merges the raw outputs of the crop and of its mirror image (labels swapped back through the
skeleton) before the one decode (`codec.decode_outputs`); `flip=None` (every method's default)
is the model's own choice (`StageSpec.flip_test`, recorded at export).

torch is imported only where a torch network runs: a weights file whose export to the CPU
runtime is cached (with its measured parity) builds that runtime from the cache directly, and
its torch networks load only if asked for (`models`).

Shapes: N person boxes, K joints, S stages. Scores are in [0, 1], decoded by the codec
(codec.py says what they mean for each head).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from poser import geometry as g
from poser.codec import (
    decode_outputs,
    decode_views,
    heatmap_view,
    normalize_input,
    pixels_to_input,
    resample_view,
    to_pixels,
)
from poser.errors import PoserError
from poser.inference.cascade import SUB_IMAGE, joint_boxes, pose_diameter
from poser.inference.prediction import Prediction
from poser.inference.search import (
    SEARCH_PASSES,
    moved,
    next_pass,
    prominence,
    search_box,
    search_margin,
    whole_image_box,
)
from poser.runtime.choice import load_networks
from poser.runtime.networks import torch_networks
from poser.skeletons import Skeleton, get_skeleton
from poser.spec import ModelSpec, StageSpec
from poser.threads import cores

if TYPE_CHECKING:
    import torch

    from poser.models.deeppose import DeepPose

DEFAULT_WEIGHTS = Path(__file__).parents[1] / "weights" / "reference.safetensors"
# The shipped models by name: LSP-14 (the default) and COCO-17 (nose, eyes and ears too).
SHIPPED = {"lsp14": DEFAULT_WEIGHTS, "coco17": DEFAULT_WEIGHTS.with_name("coco17.safetensors")}


def resolve_weights(path: str | Path | None) -> Path:
    """The weights to use: `path`, a shipped model's name (SHIPPED: 'lsp14', the default, or
    'coco17') where no file of that name exists, or the default shipped model."""
    if path is not None and (str(path) not in SHIPPED or Path(path).exists()):
        return Path(path)
    if path is not None:
        return SHIPPED[str(path)]
    if not DEFAULT_WEIGHTS.is_file():
        raise PoserError("no `weights` given and this install ships no reference model; pass `weights` FILE")
    return DEFAULT_WEIGHTS


class Predictor:
    """A model: stage one and optionally refinement stages 2..S (a cascade), each a network
    with its spec."""

    def __init__(self, stages: list[tuple[DeepPose, StageSpec]], device: str | torch.device = "cpu",
                 channels_last: bool = True) -> None:
        import torch

        models, networks = torch_networks([m for m, _ in stages], device, channels_last)
        self._assemble(ModelSpec(tuple(s for _, s in stages)), networks, models, torch.device(device))

    def _assemble(self, spec: ModelSpec, networks: list, models: list | None, device,
                  weights: Path | None = None) -> None:
        """The one place a Predictor's parts are set: its spec, what runs each stage's forward,
        and the torch models behind them (None where the model came from an exported file; not
        yet loaded from `weights` where it came from a cached export)."""
        self.spec, self.networks, self._models, self.device = spec, networks, models, device
        self._weights = weights
        self.size = spec.input_size
        self.skeleton: Skeleton = get_skeleton(spec.skeleton)

    @classmethod
    def from_file(cls, path: Path, device: str | torch.device = "cpu", stages: int | None = None,
                  runtime: str | None = None, precision: str = "auto") -> Predictor:
        """A poser weights file or cascade bundle, or a model `poser export` wrote (.onnx, OpenVINO
        .xml); `stages` runs only the first N stages; `runtime` and `precision` as in
        runtime/choice.py (None: torch for a weights file, 'auto' for an exported one)."""
        loaded = load_networks(Path(path), device, stages, runtime, precision)
        pred = cls.__new__(cls)
        pred._assemble(loaded.spec, loaded.networks, loaded.models, loaded.device, loaded.weights)
        return pred

    @property
    def runtime(self) -> str:
        """Which runtime runs the forward, and at what precision: e.g. 'openvino/bf16'."""
        return f"{self.networks[0].runtime}/{self.networks[0].precision}"

    def first_stages(self, n: int) -> Predictor:
        """The same model with only its first n stages (the networks are shared, not copied)."""
        if n == self.num_stages:
            return self
        pred = Predictor.__new__(Predictor)
        pred._assemble(self.spec.take(n), self.networks[:n], None if self._models is None else self._models[:n],
                       self.device, self._weights)
        return pred

    @property
    def models(self) -> list:
        """Each stage's torch network: None for a model loaded from an exported file; loaded from
        the weights file on first use for one built from the cached export."""
        if self._models is None:
            from poser.models.deeppose import load_stages

            self._models = [m for m, _ in load_stages(self._weights, "cpu", self.num_stages)]
        return self._models

    @property
    def model(self) -> DeepPose:
        """Stage one's torch network (None for a model loaded from an exported file)."""
        return self.models[0]

    @property
    def num_stages(self) -> int:
        return len(self.networks)

    # --- crops -> keypoints ----------------------------------------------------------------
    def _forward(self, s: int, crops: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """crops -> stage s's raw head outputs: (N, 3, S, S) float RGB in [0, 1] on the device
        (cut by grid_sample), or (N, S, S, 3) uint8 RGB (cut by OpenCV from photos), which
        OpenVINO converts and normalises itself."""
        spec, net = self.spec.stages[s], self.networks[s]
        if isinstance(crops, np.ndarray):
            if hasattr(net, "pixels"):          # a runtime that converts uint8 crops itself (OpenVINO)
                return net.pixels(crops, spec.mean, spec.std)
            return net(pixels_to_input(crops, spec.mean, spec.std))
        return net(normalize_input(crops, spec.mean, spec.std))

    def _stage(self, s: int, crop_fn, boxes: np.ndarray, owner: np.ndarray, flip: bool,
               chunk: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stage s on crops around `boxes` (M, 4) of the images `owner` (M,) points into:
        keypoints (M, K, 2) px, scores and in_crop (M, K)."""
        spec = self.spec.stages[s]
        size = spec.input_size
        center, side = g.box_to_square(boxes, spec.margin)
        parts = []
        for a in range(0, len(boxes), chunk):
            sl = slice(a, a + chunk)
            m = g.crop_matrix(center[sl], side[sl], size)
            out, mirrored = self._forward(s, crop_fn(m, owner[sl], size)), None
            if flip:    # the mirrored crop; the head merges both outputs before its one decode
                mf = g.crop_matrix(center[sl], side[sl], size, 0.0, True)
                mirrored = self._forward(s, crop_fn(mf, owner[sl], size))
            dec = decode_outputs(spec.head, out, mirrored, self.skeleton.flip_index, spec.decode_radius)
            parts.append(to_pixels(dec, m, size))
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))

    @property
    def flip_test(self) -> bool:
        """Whether the flip test is this model's default (its spec says: measured better with it)."""
        return self.spec.first.flip_test

    def _predict(self, crop_fn, boxes: np.ndarray, flip: bool | None) -> Prediction:
        n, k = len(boxes), self.skeleton.num_joints
        flip = self.flip_test if flip is None else flip
        coords, score, visible = self._stage(0, crop_fn, boxes, np.arange(n), flip)
        history = [coords]
        for s in range(1, self.num_stages):
            # Stage s: a sub-image around every joint's current estimate; row j of the crop
            # around joint j is the refined joint j.
            spec = self.spec.stages[s]
            diam = pose_diameter(coords, self.skeleton)
            jb = joint_boxes(coords, np.repeat(diam[:, None], k, 1), spec.sub_image or SUB_IMAGE, spec.margin)
            r = self._stage(s, crop_fn, jb.reshape(-1, 4), np.repeat(np.arange(n), k), flip)
            rows = np.arange(n * k), np.tile(np.arange(k), n)
            coords, score, visible = (v[rows].reshape(n, k, *v.shape[2:]) for v in r)
            history.append(coords)
        return Prediction(coords, score, visible, np.stack(history, 1), boxes)

    def predict_batch(self, images: torch.Tensor, boxes: np.ndarray, flip: bool | None = None) -> Prediction:
        """images (N, 3, H, W) uint8 RGB (one per box, same size), boxes (N, 4) xywh in them.
        Crops on the device with grid_sample: right for prepared crops and modest scaling."""
        import torch

        images = images.to(self.device).float().div_(255)    # once: refinement stages crop each image K times

        def crops(m, owner, size):
            return g.warp_batch(images[torch.as_tensor(owner, device=images.device)], m, size)

        return self._predict(crops, np.asarray(boxes, np.float64), flip)

    def predict_image(self, image: np.ndarray, boxes: np.ndarray, flip: bool | None = None) -> Prediction:
        """image (H, W, 3) uint8 RGB of any size, boxes (N, 4) xywh in it."""
        return self.predict_images([image], [boxes], flip)[0]

    def predict_images(self, images: list[np.ndarray], boxes: list[np.ndarray],
                       flip: bool | None = None) -> list[Prediction]:
        """Several images of any sizes, each with its boxes, in one batch through the model.
        Crops with OpenCV, which area-averages strong down-scaling (a 4K frame to a 128 px
        crop stays sharp, not aliased)."""
        boxes = [np.asarray(b, np.float64).reshape(-1, 4) for b in boxes]
        counts = [len(b) for b in boxes]
        owner = np.repeat(np.arange(len(images)), counts)
        if owner.size == 0:
            return [Prediction.empty(self.skeleton.num_joints, self.num_stages) for _ in images]

        def crops(m, rows, size):      # OpenCV releases the GIL: the crops are cut on every core
            return np.stack(list(_crop_pool().map(lambda a: g.warp_image(images[owner[a[0]]], a[1], size),
                                                  zip(rows, m, strict=True))))

        return _off_image_unseen(images, self._predict(crops, np.concatenate(boxes), flip).split(counts))

    def _mirror_pass(self, images: list[np.ndarray], boxes: list[np.ndarray], prior: list | None = None
                     ) -> tuple[list[Prediction], list]:
        """One pass of the search whose flip test takes its mirror from the pass before the
        last (`mirror_search`), one box (1, 4) per image: without `prior`, a pass before the
        last, on the mirrored crops only; with it (per image, the view and crop matrix a pass
        before left), the last pass, on the plain crops, merged with that mirrored view
        resampled into the new crop's frame. Returns the predictions and, per image, its view."""
        spec, size = self.spec.first, self.spec.first.input_size
        center, side = g.box_to_square(np.concatenate(boxes), spec.margin)
        m = g.crop_matrix(center, side, size)
        cut = g.crop_matrix(center, side, size, 0.0, True) if prior is None else m
        x = np.stack(list(_crop_pool().map(lambda a: g.warp_image(images[a[0]], a[1], size), enumerate(cut))))
        view = heatmap_view(self._forward(0, x), self.skeleton.flip_index if prior is None else None)
        views = [view]
        if prior is not None:
            before = (np.stack([p[0][0] for p in prior]), np.stack([p[0][1] for p in prior]))
            views.append(resample_view(before, np.stack([p[1] for p in prior]), m, size))
        coords, score, visible = to_pixels(decode_views(views, spec.decode_radius), m, size)
        pred = Prediction(coords, score, visible, coords[:, None], np.concatenate(boxes))
        kept = [((view[0][i], view[1][i]), m[i]) for i in range(len(images))]
        return _off_image_unseen(images, pred.split([1] * len(images))), kept

    def mirror_search(self, flip: bool, passes: int) -> bool:
        """Whether the person search takes the flip test's mirrored view from the pass before
        its last (that pass runs on the mirrored crop, whose heatmaps are resampled into the last
        crop's frame) instead of cropping the last box twice: a single-stage heatmap model with
        the flip test on and two passes or more. One crop fewer a photo at the same PCP
        (LSPET val, whole photo: 0.6622 against 0.6624; docs/runtimes.md)."""
        return flip and passes >= 2 and self.num_stages == 1 and self.spec.first.head == "integral"

    def find_person(self, images: list[np.ndarray], passes: int = SEARCH_PASSES, flip: bool | None = None,
                    starts: list[np.ndarray] | None = None) -> list[Prediction]:
        """The one person in each whole image (H, W, 3) uint8 RGB, with no box given (the
        person search, inference/search.py): one Prediction per image, whose `boxes` is the
        box of the last pass. Images whose estimate has settled skip to the last pass.
        `starts`: per image, (S, 4) boxes to search from (default: the whole image), of whose
        results the most prominent person is kept (`search.prominence`)."""
        starts = starts if starts is not None else [whole_image_box(im) for im in images]
        owner = [i for i, st in enumerate(starts) for _ in range(len(st))]
        imgs = [images[i] for i in owner]
        # The flip test only on the last pass: the passes before it only place the box, and
        # mirrored crops there would double their time for no PCP (measured: docs/runtimes.md).
        # Where `mirror_search` holds, the pass before the last runs on the mirrored crop and
        # lends the last pass its mirrored view: one crop fewer a photo.
        res = self.predict_images(imgs, [b[None] for st in starts for b in np.asarray(st, float)],
                                  flip if passes == 0 else False)
        step: dict[int, int] = {j: 0 for j in range(len(imgs))} if passes > 0 else {}
        flip = self.flip_test if flip is None else flip
        mirror, views = self.mirror_search(flip, passes), {}
        while step:
            for last in (False, True):
                todo = [j for j in step if (step[j] == passes - 1) == last]
                if not todo:
                    continue
                boxes = [search_box(res[j].keypoints[0], search_margin(step[j], passes))[None] for j in todo]
                if mirror:
                    found, kept = self._mirror_pass([imgs[j] for j in todo], boxes,
                                                    [views[j] for j in todo] if last else None)
                    views.update(zip(todo, kept, strict=True))
                else:
                    found = self.predict_images([imgs[j] for j in todo], boxes, flip if last else False)
                for j, r in zip(todo, found, strict=True):
                    k = next_pass(step.pop(j), passes, moved(res[j].keypoints[0], r.keypoints[0]))
                    res[j] = r
                    if k is not None:
                        step[j] = k
        best: dict[int, tuple[float, Prediction]] = {}
        for i, r in zip(owner, res, strict=True):
            p = prominence(r.keypoints[0], r.scores[0], images[i].shape)
            if i not in best or p > best[i][0]:
                best[i] = p, r
        return [best[i][1] for i in range(len(images))]

    def predict_cache(self, cache, flip: bool | None = None, batch_size: int = 64,
                      limit: int | None = None, progress=None) -> Prediction:
        """Every instance of a prepared cache (the first `limit`), in cache-crop pixels (the
        frame of cache.keypoints); `cache.matrix` maps them back to the original image."""
        import torch

        n = len(cache) if limit is None else min(len(cache), limit)
        parts = []
        for s in range(0, n, batch_size):
            idx = np.arange(s, min(n, s + batch_size))
            imgs = torch.stack([cache.image(i) for i in idx])
            parts.append(self.predict_batch(imgs, cache.boxes[idx], flip))
            if progress is not None:
                progress(len(idx))
        if not parts:
            return Prediction.empty(self.skeleton.num_joints, self.num_stages)
        return Prediction.concat(parts)


@functools.cache
def _crop_pool() -> ThreadPoolExecutor:
    """The process's threads that cut crops from photos (OpenCV, one thread per call), one per core."""
    return ThreadPoolExecutor(cores())


def _off_image_unseen(images: list[np.ndarray], preds: list[Prediction]) -> list[Prediction]:
    """A joint predicted off its image cannot be seen in it: its score and in-crop go to 0."""
    for im, pr in zip(images, preds, strict=True):
        h, w = im.shape[:2]
        x, y = pr.keypoints[..., 0], pr.keypoints[..., 1]
        off = ~((x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5))
        pr.in_crop[off], pr.scores[off] = 0.0, 0.0
    return preds


def cache_to_image(cache, coords: np.ndarray) -> np.ndarray:
    """Cache-crop pixel coordinates (N, K, 2) -> original image pixels."""
    return g.transform_points(g.invert_affine(cache.matrix[: len(coords)]), coords)
