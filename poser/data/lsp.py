"""LSP and LSP-Extended (`joints.mat` + `images/`) -> Instances with the LSP-14 skeleton.

Both layouts of `joints.mat` are read:
- LSP (2,000 images, `im0001.jpg`): 3 x 14 x N; the third row is an *occlusion* flag and
  every joint is labelled (occluded ones are estimated), so flag 1 -> COCO v=1, 0 -> v=2.
- LSP-Extended (10,000 images, `im00001.jpg`): 14 x 3 x N; the third column is a
  *visibility* flag and invisible joints carry no position (they sit at x, y <= 0), so
  1 -> v=2, 0 -> v=0 (not labelled).
There is one person per image and no box: the box is the labelled joints' extent grown by
PERSON_BOX_MARGIN on each side, which is also what `--boxes` users are told to supply.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from poser.data.matfile import read_mat
from poser.data.records import Instances
from poser.errors import PoserError
from poser.geometry import PERSON_BOX_MARGIN, keypoint_box
from poser.skeletons import LSP14

# Splits by 1-based image number. LSP's is the published one (first 1,000 train, last
# 1,000 test). LSPET has none; poser holds out im08001-im09000 for validation.
SPLITS = {
    "lsp": {"train": (1, 1000), "val": (1001, 2000)},
    "lspet": {"val": (8001, 9000)},
}


def detect_layout(joints: np.ndarray, path: Path | str = "") -> str:
    if joints.ndim == 3 and joints.shape[:2] == (3, 14):
        return "lsp"
    if joints.ndim == 3 and joints.shape[:2] == (14, 3):
        return "lspet"
    raise PoserError(f"{path}: 'joints' has shape {joints.shape}; expected 3x14xN (LSP) or 14x3xN (LSPET)")


def read_lsp(root: Path, split: str = "all") -> Instances:
    """Instances of an LSP or LSPET folder; `split` is 'all', 'train' or 'val'."""
    root = Path(root)
    mat = root / "joints.mat"
    if not mat.is_file():
        raise PoserError(f"{root}: no joints.mat (expected an LSP or LSP-Extended folder)")
    arrays = read_mat(mat)
    if "joints" not in arrays:
        raise PoserError(f"{mat}: no numeric variable 'joints'")
    j = arrays["joints"]
    layout = detect_layout(j, mat)
    if layout == "lsp":
        xyf = j.transpose(2, 1, 0)                   # N x 14 x 3
        vis = np.where(xyf[..., 2] > 0, 1, 2)
        name = "im{:04d}.jpg"
    else:
        xyf = j.transpose(2, 0, 1)
        vis = np.where(xyf[..., 2] > 0, 2, 0)
        name = "im{:05d}.jpg"
    n = xyf.shape[0]
    kps = np.concatenate([xyf[..., :2], vis[..., None]], -1).astype(np.float32)
    kps[kps[..., 2] == 0, :2] = 0.0                  # as COCO stores unlabelled joints

    numbers = np.arange(1, n + 1)
    keep = _split_mask(layout, split, numbers)
    skipped: Counter = Counter()
    files, sizes, rows = [], [], []
    for i in np.flatnonzero(keep):
        if not np.isfinite(kps[i, :, :2]).all():     # a NaN joint marked labelled: no box can be made
            skipped["non_finite_joints"] += 1
            continue
        if not (kps[i, :, 2] > 0).any():
            skipped["no_keypoints"] += 1
            continue
        f = name.format(i + 1)
        try:
            with Image.open(root / "images" / f) as im:  # reads the header only
                sizes.append(im.size)
        except FileNotFoundError:
            skipped["missing_image"] += 1
            continue
        except OSError:
            skipped["bad_image"] += 1
            continue
        files.append(f"images/{f}")
        rows.append(i)
    rows_a = np.asarray(rows, dtype=np.int64)
    kp = kps[rows_a].reshape(-1, 14, 3)
    return Instances(
        skeleton=LSP14,
        image_root=root,
        files=files,
        image_ids=rows_a + 1,
        image_sizes=np.asarray(sizes, dtype=np.int32).reshape(-1, 2),
        image_index=np.arange(len(rows_a), dtype=np.int32),
        boxes=keypoint_box(kp, PERSON_BOX_MARGIN).astype(np.float32),
        keypoints=kp,
        ann_ids=rows_a + 1,
        skipped=skipped,
    )


def _split_mask(layout: str, split: str, numbers: np.ndarray) -> np.ndarray:
    if split == "all":
        return np.ones(len(numbers), bool)
    spans = SPLITS[layout]
    if split not in ("train", "val"):
        raise PoserError(f"unknown split {split!r} for {layout.upper()} (use train, val or all)")
    if split in spans:
        lo, hi = spans[split]
        return (numbers >= lo) & (numbers <= hi)
    lo, hi = spans["val"]                            # train = everything not held out
    return (numbers < lo) | (numbers > hi)
