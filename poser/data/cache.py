"""Prepared training cache: one fixed-size crop per person instance, built once, read fast.

Shapes: N instances, K joints, S = cache crop side in pixels.

Layout of `<dataset>/cache/<split>-<S>/`:
- `shard-XXX.bin`: JPEG-encoded S x S crops, concatenated (one shard per build chunk);
- `index.npz`: per instance shard, offset and length of its JPEG, the 2x3 matrix from image
  to cache crop, keypoints (N, K, 3) in cache-crop pixels, the person box and the photo's
  rectangle in cache-crop pixels, image id and annotation id (plain arrays: loaded with
  allow_pickle=False);
- `meta.json`: format version, skeleton, S, margin, what it was built from.

Each crop is the person box grown to a square of `margin` x its longer side (2x by default,
room for rotation, scale and shift augmentation), grown further to hold the whole photo (or as
much of it as fits in `context` x the box's longer side) so training can also show the model
loose crops and whole photos, as the person search sees them. Made with the shared geometry,
so the trainer only decodes a small JPEG (~3,000/s per core) instead of a full photo.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from poser import geometry as g
from poser.console import log, progress
from poser.data.records import Instances
from poser.errors import PoserError
from poser.files import atomic_dir
from poser.imageio import decode_rgb, read_bgr
from poser.skeletons import get_skeleton

if TYPE_CHECKING:
    import torch

CACHE_VERSION = 2
MAX_CACHE_SIZE = 1024   # px: a crop of 1024 x 1024 x 3 is 3 MB in memory; 100000 would be 30 GB
@dataclass(frozen=True)
class CacheSpec:
    size: int = 256         # cache crop side (px)
    margin: float = 2.0     # crop side = margin x the longer side of the person box
    quality: int = 95       # JPEG quality
    context: float = 3.0    # grow the crop to hold the whole photo, up to this x the box's longer side

    def __post_init__(self) -> None:
        if not 16 <= self.size <= MAX_CACHE_SIZE:
            raise PoserError(f"`cache_size` {self.size}: must be between 16 and {MAX_CACHE_SIZE} px")


def cache_dir(root: Path, split: str, spec: CacheSpec, cache_root: Path | None = None) -> Path:
    """Where a split's cache lives: `<root>/cache/<split>-<size>`, or under `cache_root` (a
    writable folder of this dataset's own, for read-only data)."""
    return (Path(cache_root) if cache_root else Path(root) / "cache") / f"{split}-{spec.size}"


def _build_chunk(job: tuple) -> dict:
    """Worker: crop and encode the instances of some images into one shard file."""
    paths, rows_per_image, boxes, kps, sizes, spec, shard = job
    cv2.setNumThreads(1)
    n = sum(len(r) for r in rows_per_image)
    out = {"rows": np.concatenate(rows_per_image) if n else np.zeros(0, np.int64),
           "offset": np.zeros(n, np.int64), "length": np.zeros(n, np.int32),
           "matrix": np.zeros((n, 2, 3), np.float32), "ok": np.zeros(n, bool)}
    center, side = context_square(boxes, sizes, spec.margin, spec.context)
    mats = g.crop_matrix(center, side, spec.size)
    pos, i = 0, 0
    with open(shard, "wb") as fh:
        for path, rows in zip(paths, rows_per_image, strict=True):
            img = read_bgr(path)
            for _ in rows:
                if img is not None:
                    crop = g.warp_image(img, mats[i], spec.size)
                    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, spec.quality])
                    if ok:
                        fh.write(buf.tobytes())
                        out["offset"][i], out["length"][i], out["ok"][i] = pos, len(buf), True
                        pos += len(buf)
                out["matrix"][i] = mats[i]
                i += 1
    out["keypoints"] = g.transform_points(mats, kps[..., :2]) if n else np.zeros((0, kps.shape[1], 2))
    return out


def context_square(boxes: np.ndarray, sizes: np.ndarray, margin: float,
                   context: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres (N, 2) and sides (N,) of cache crops: the smallest square holding the person box
    grown by `margin` and the photo (width, height `sizes` (N, 2)) clipped to a square of
    `context` x the box's longer side around the box."""
    center, side = g.box_to_square(boxes, margin)
    if context <= 0:
        return center, side
    reach = np.maximum(boxes[:, 2], boxes[:, 3])[:, None] * context / 2
    lo = np.maximum(-0.5, center - reach)                           # the photo spans [-0.5, W - 0.5]
    hi = np.minimum(sizes - 0.5, center + reach)
    lo = np.minimum(lo, center - side[:, None] / 2)
    hi = np.maximum(hi, center + side[:, None] / 2)
    return (lo + hi) / 2, (hi - lo).max(-1)


def _jobs(inst: Instances, groups: list, chunk_groups: list, spec: CacheSpec, tmp: Path) -> list[tuple]:
    """One worker job per chunk of images: their paths, instance rows, boxes, keypoints, sizes."""
    jobs = []
    for c, gi in enumerate(chunk_groups):
        rows = [groups[k] for k in gi]
        if not rows:
            continue
        flat = np.concatenate(rows)
        paths = [inst.path(r[0]) for r in rows]
        sizes = inst.image_sizes[inst.image_index[flat]].astype(np.float64)
        jobs.append((paths, rows, inst.boxes[flat], inst.keypoints[flat], sizes, spec, tmp / f"shard-{c:03d}.bin"))
    return jobs


def build_cache(
    inst: Instances, out: Path, spec: CacheSpec = CacheSpec(), workers: int | None = None,
    source: dict | None = None,
) -> dict:
    """Build the cache for `inst` in `out` (replaced atomically); returns counts.

    Images that cannot be read are reported and their instances skipped; the rest is built.
    """
    workers = workers or os.cpu_count() or 1
    order = np.argsort(inst.image_index, kind="stable")      # group instances by image
    img_of = inst.image_index[order]
    cuts = np.flatnonzero(np.diff(img_of)) + 1
    groups = np.split(order, cuts) if len(order) else []
    n_chunks = max(1, min(len(groups), workers * 4))
    chunk_groups = np.array_split(np.arange(len(groups)), n_chunks)
    if len(inst) == 0:
        raise PoserError("no person instances to prepare")
    shards = tuple(f"shard-{c:03d}.bin" for c in range(1000))      # what a cache folder holds
    with atomic_dir(out, overwrite=True, known=("index.npz", "meta.json", *shards)) as tmp, \
            progress("instances") as bar:
        task = bar.add_task(f"prepare {out.name}", total=len(inst))
        jobs = _jobs(inst, groups, chunk_groups, spec, tmp)
        parts = []
        # forkserver, not fork: a process that already ran torch or OpenVINO threads (poser.load()
        # then eval, in one Python session) would fork children holding its locks, and they hang.
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("forkserver")) as ex:
            for c, res in enumerate(ex.map(_build_chunk, jobs)):
                res["shard"] = np.full(len(res["rows"]), int(jobs[c][6].stem.split("-")[1]), np.int16)
                parts.append(res)
                bar.advance(task, len(res["rows"]))
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        ok = cat["ok"]
        rows = cat["rows"][ok]
        kp = inst.keypoints[rows].copy()
        kp[..., :2] = np.where(kp[..., 2:] > 0, cat["keypoints"][ok], 0.0)
        mats = cat["matrix"][ok].astype(np.float64)
        box_pts = np.stack([inst.boxes[rows, :2], inst.boxes[rows, :2] + inst.boxes[rows, 2:]], 1)
        b = g.transform_points(mats, box_pts)
        wh = inst.image_sizes[inst.image_index[rows]].astype(np.float64)
        photo = g.transform_points(mats, np.stack([np.full_like(wh, -0.5), wh - 0.5], 1))
        np.savez(
            tmp / "index.npz", shard=cat["shard"][ok], offset=cat["offset"][ok], length=cat["length"][ok],
            matrix=cat["matrix"][ok], keypoints=kp.astype(np.float32),
            box=np.concatenate([b[:, 0], b[:, 1] - b[:, 0]], 1).astype(np.float32),
            photo=np.concatenate([photo[:, 0], photo[:, 1] - photo[:, 0]], 1).astype(np.float32),
            image_id=inst.image_ids[inst.image_index[rows]], ann_id=inst.ann_ids[rows],
        )
        skipped = dict(inst.skipped)
        if (~ok).sum():
            skipped["unreadable_image"] = int((~ok).sum())
            bad = sorted({str(inst.path(r)) for r in cat["rows"][~ok]})
            log.warning(f"{len(bad)} unreadable image(s), e.g. {bad[0]}")
        meta = {"version": CACHE_VERSION, "skeleton": inst.skeleton.name, **asdict(spec),
                "instances": int(ok.sum()), "skipped": skipped, "source": source or {}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return {"instances": int(ok.sum()), "skipped": skipped}


class Cache:
    """Read side of a prepared cache: JPEG bytes straight from memory-mapped shards."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        try:
            self.meta = json.loads((path / "meta.json").read_text())
            idx = np.load(path / "index.npz", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise PoserError(f"{path}: not a prepared cache ({e}); run the fetch command again "
                             "with `prepare_only`") from None
        if self.meta.get("version") != CACHE_VERSION:
            raise PoserError(f"{path}: cache format {self.meta.get('version')} is not {CACHE_VERSION}; rebuild it")
        self.path = path
        self.skeleton = get_skeleton(self.meta["skeleton"])
        self.size = int(self.meta["size"])
        self.shard, self.offset, self.length = idx["shard"], idx["offset"], idx["length"]
        self.matrix, self.keypoints, self.boxes = idx["matrix"], idx["keypoints"], idx["box"]
        self.photos = idx["photo"]          # (N, 4) xywh: the whole photo, in cache-crop pixels
        self.image_ids, self.ann_ids = idx["image_id"], idx["ann_id"]
        self._shards: dict[int, np.memmap] = {}

    def __len__(self) -> int:
        return len(self.offset)

    def __getstate__(self) -> dict:
        # Loader workers get the index but open their own maps (pickling a memmap would
        # copy the whole shard).
        return {**self.__dict__, "_shards": {}}

    def encoded(self, i: int) -> np.ndarray:
        s = int(self.shard[i])
        if s not in self._shards:  # opened lazily, so each loader worker maps its own
            self._shards[s] = np.memmap(self.path / f"shard-{s:03d}.bin", dtype=np.uint8, mode="r")
        o = int(self.offset[i])
        return self._shards[s][o: o + int(self.length[i])]

    def image(self, i: int) -> torch.Tensor:
        """Crop i as a (3, S, S) uint8 RGB tensor."""
        import torch

        return torch.from_numpy(decode_rgb(self.encoded(i))).permute(2, 0, 1)


class CacheDataset:
    """(image (3, S, S) uint8, keypoints (K, 3) float32 in cache pixels, index) per instance: a
    map-style dataset (all torch's DataLoader and samplers ask for is __len__ and __getitem__;
    not subclassing theirs keeps torch out of the commands that only read a cache's boxes)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.cache = Cache(self.path)

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        import torch

        return self.cache.image(i), torch.from_numpy(self.cache.keypoints[i]), i
