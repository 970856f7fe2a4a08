"""COCO person_keypoints JSON -> Instances, through pycocotools' index."""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
from pycocotools.coco import COCO

from poser.console import log
from poser.data.records import Instances
from poser.errors import PoserError
from poser.skeletons import COCO17


def load_coco_json(path: Path) -> COCO:
    """Parse and index a COCO annotation file; malformed input is a one-line PoserError."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise PoserError(f"annotation file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PoserError(f"malformed JSON in {path}: {e}") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise PoserError(
            f"{path} is not a COCO annotation file (needs lists 'images', 'annotations', 'categories')"
        )
    _check_images(data["images"], path)
    _unique_annotation_ids(data["annotations"], path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
        try:
            coco.createIndex()
        except (KeyError, TypeError) as e:
            raise PoserError(f"{path}: malformed COCO record (missing or bad field {e})") from None
    return coco


def _check_images(images: list, path: Path) -> None:
    """Each image: an integer id of its own and a file name inside the image folder. Two
    images sharing an id would crop one photo's people from the other; `../x.jpg` or an
    absolute name would read a file outside the dataset."""
    first: dict[int, int] = {}
    for i, im in enumerate(images):
        iid = im.get("id") if isinstance(im, dict) else None
        if not isinstance(iid, int) or isinstance(iid, bool):
            raise PoserError(f"{path}: images[{i}] needs an integer id, not {iid!r}")
        name = im.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise PoserError(f"{path}: images[{i}] (id {iid}) needs a file_name, not {name!r}")
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or Path(name).is_absolute() or ".." in parts or ":" in parts[0]:
            raise PoserError(f"{path}: images[{i}] file_name {name!r} is outside the dataset's image folder; "
                             "refused")
        if iid in first:
            raise PoserError(f"{path}: images[{first[iid]}] and images[{i}] share id {iid}; every image needs "
                             "its own")
        first[iid] = i


def _unique_annotation_ids(anns: list, path: Path) -> None:
    """Annotation ids that repeat (or are missing) would make pycocotools hand out one person
    for all of them: numbered 1..N in file order instead, and said so."""
    ids = [a.get("id") if isinstance(a, dict) else None for a in anns]
    valid = [i for i in ids if isinstance(i, int) and not isinstance(i, bool)]
    if len(valid) == len(ids) and len(set(valid)) == len(valid):
        return
    log.warning(f"{path}: {len(ids) - len(set(valid))} of {len(ids)} annotation ids repeat or are missing; "
                "annotations numbered 1..N in file order")
    for n, a in enumerate(anns, start=1):
        if isinstance(a, dict):
            a["id"] = n


def person_category(coco: COCO, path: Path | str = "") -> int:
    """Id of the category whose keypoint names are COCO-17."""
    for cat in coco.dataset["categories"]:
        if cat.get("keypoints"):
            if list(cat["keypoints"]) != list(COCO17.joints):
                raise PoserError(
                    f"{path}: category {cat.get('name')!r} has keypoints {cat['keypoints'][:3]}... "
                    "which are not the COCO-17 skeleton"
                )
            return int(cat["id"])
    raise PoserError(f"{path}: no category with keypoints (not a person_keypoints file)")


def _keypoints(kp, k: int, skipped: Counter) -> np.ndarray | None:
    """(K, 3) keypoints of an annotation, or None (counted) when they are not K numeric triples.
    A non-finite labelled joint is unlabelled (a NaN would poison the loss and blame --lr)."""
    if not isinstance(kp, list) or len(kp) != 3 * k:
        skipped["bad_keypoints"] += 1
        return None
    try:
        kp = np.asarray(kp, dtype=np.float32).reshape(k, 3)
    except (TypeError, ValueError):         # null or a string among the values
        skipped["bad_keypoints"] += 1
        return None
    bad = (kp[:, 2] > 0) & ~np.isfinite(kp[:, :2]).all(-1) | ~np.isfinite(kp[:, 2])
    if bad.any():
        kp[bad] = 0
        skipped["non_finite_joints"] += int(bad.sum())
    return kp


def _box_ok(box) -> bool:
    return (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, int | float) and math.isfinite(v) for v in box) and box[2] >= 1 and box[3] >= 1)


def read_coco(
    ann_file: Path, image_root: Path, include_crowd: bool = False, min_keypoints: int = 1
) -> Instances:
    """Person instances of a COCO person_keypoints file.

    Skipped (and counted by reason): crowd regions, annotations with fewer than
    `min_keypoints` labelled joints, boxes that are not finite or under 1 px, keypoint
    lists of the wrong length, and annotations whose image record is missing.
    """
    coco = load_coco_json(ann_file)
    cat = person_category(coco, ann_file)
    k = COCO17.num_joints
    skipped: Counter = Counter()
    rows_img, boxes, kps, ann_ids = [], [], [], []
    img_ids = sorted(coco.imgs)
    img_row = {iid: r for r, iid in enumerate(img_ids)}
    for ann in coco.loadAnns(coco.getAnnIds(catIds=[cat], iscrowd=None)):
        if ann.get("iscrowd", 0) and not include_crowd:
            skipped["crowd"] += 1
            continue
        if ann.get("image_id") not in img_row:
            skipped["missing_image_record"] += 1
            continue
        kp = _keypoints(ann.get("keypoints"), k, skipped)
        if kp is None:
            continue
        if int((kp[:, 2] > 0).sum()) < min_keypoints:
            skipped["no_keypoints"] += 1
            continue
        box = ann.get("bbox")
        if not _box_ok(box):
            skipped["degenerate_box"] += 1
            continue
        rows_img.append(img_row[ann["image_id"]])
        boxes.append(box)
        kps.append(kp)
        ann_ids.append(ann.get("id", len(ann_ids)))
    imgs = coco.loadImgs(img_ids)
    return Instances(
        skeleton=COCO17,
        image_root=Path(image_root),
        files=[im["file_name"] for im in imgs],
        image_ids=np.asarray(img_ids, dtype=np.int64),
        image_sizes=np.asarray([(im.get("width", 0), im.get("height", 0)) for im in imgs],
                               dtype=np.int32).reshape(-1, 2),
        image_index=np.asarray(rows_img, dtype=np.int32),
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        keypoints=np.asarray(kps, dtype=np.float32).reshape(-1, k, 3),
        ann_ids=np.asarray(ann_ids, dtype=np.int64),
        skipped=skipped,
    )
