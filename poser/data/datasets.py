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
    """The annotation file a split is read from (joints.mat or COCO JSON): the one place a
    dataset's layout is recognised."""
    root = Path(root)
    if not root.is_dir():
        raise PoserError(f"dataset folder not found: {root}")
    if (root / "joints.mat").is_file():
        return root / "joints.mat"
    found = coco_split_files(root, split)
    if not found:
        raise PoserError(f"{root}: no dataset for split {split!r} (looked for joints.mat and "
                         f"annotations/person_keypoints_{split}[2017].json)")
    return found[0]


def dataset_skeleton(root: Path, split: str) -> str:
    """The skeleton a split is labelled with, from its layout alone (nothing is read)."""
    return "lsp14" if source_file(root, split).name == "joints.mat" else "coco17"


def open_dataset(root: Path, split: str = "val") -> Instances:
    """Person instances of one split of the dataset at `root`."""
    src = source_file(root, split)
    if src.name == "joints.mat":
        return read_lsp(Path(root), split)
    return read_coco(*coco_split_files(Path(root), split))
