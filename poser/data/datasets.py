"""Find and read a dataset root as fetch-coco, fetch-lsp or synth leave it.

Layouts:
- COCO-format (COCO 2017, synth): `annotations/person_keypoints_<split>.json` with images in
  `<split>/`, where <split> is e.g. `val` or `val2017` (both are tried).
- LSP / LSP-Extended: `joints.mat` and `images/`.
"""

from __future__ import annotations

from pathlib import Path

from poser.data.coco import read_coco
from poser.data.lsp import read_lsp
from poser.data.records import Instances
from poser.errors import PoserError


def coco_split_files(root: Path, split: str) -> tuple[Path, Path] | None:
    """(annotation file, image folder) of a COCO-format split, or None."""
    for name in (split, f"{split}2017"):
        ann = root / "annotations" / f"person_keypoints_{name}.json"
        if ann.is_file():
            return ann, root / name
    return None


def source_file(root: Path, split: str) -> Path:
    """The annotation file a split is read from (COCO JSON or joints.mat)."""
    root = Path(root)
    if (root / "joints.mat").is_file():
        return root / "joints.mat"
    found = coco_split_files(root, split)
    if not found:
        raise PoserError(f"{root}: no dataset for split {split!r}")
    return found[0]


def open_dataset(root: Path, split: str = "val") -> Instances:
    """Person instances of one split of the dataset at `root`."""
    root = Path(root)
    if not root.is_dir():
        raise PoserError(f"dataset folder not found: {root}")
    if (root / "joints.mat").is_file():
        return read_lsp(root, split)
    found = coco_split_files(root, split)
    if found:
        return read_coco(*found)
    raise PoserError(
        f"{root}: no dataset for split {split!r} (looked for joints.mat and "
        f"annotations/person_keypoints_{split}[2017].json)"
    )
