"""Hostile datasets, predictions and images of the second fault audit (issue 37): refused or
re-keyed in one line, bounded before decoding, never read from outside the dataset."""

from __future__ import annotations

import json
import shutil
import struct
import zlib

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from poser.cli import app
from poser.data.coco import read_coco
from poser.errors import PoserError
from poser.imageio import MAX_PIXELS, declared_size, read_rgb
from poser.skeletons import COCO17

runner = CliRunner()


def _ann(tmp_path, images, anns):
    p = tmp_path / "ann.json"
    p.write_text(json.dumps({"images": images, "annotations": anns,
                             "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.joints)}]}))
    return p


def _person(iid, aid, x=10.0):
    kp = []
    for j in range(17):
        kp += [x + j, 20.0 + 2 * j, 2]
    return {"id": aid, "image_id": iid, "category_id": 1, "keypoints": kp, "bbox": [x, 20, 30, 40],
            "num_keypoints": 17, "iscrowd": 0, "area": 1200.0}


def test_repeated_annotation_ids_are_renumbered_and_said(tmp_path, caplog):
    """Case 12: all ids 1 gave 14 copies of one person."""
    images = [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}]
    inst = read_coco(_ann(tmp_path, images, [_person(1, 1, x) for x in (5.0, 30.0, 55.0)]), tmp_path)
    assert len(inst.boxes) == 3 and sorted(inst.boxes[:, 0].tolist()) == [5.0, 30.0, 55.0]
    assert "annotation ids" in caplog.text


def test_images_sharing_an_id_or_naming_files_outside_are_refused(tmp_path):
    """Cases 12, 15 and 17: one photo's people cropped from another; `../`, absolute names; ids
    that are strings, names that are null."""
    cases = [
        ([{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}], "share id 1"),
        ([{"id": 1, "file_name": "../../outside/secret.jpg"}], "outside the dataset"),
        ([{"id": 1, "file_name": str(tmp_path / "abs.jpg")}], "outside the dataset"),
        ([{"id": "1", "file_name": "a.jpg"}], "integer id"),
        ([{"id": 1, "file_name": None}], "needs a file_name"),
    ]
    for images, msg in cases:
        with pytest.raises(PoserError, match=msg):
            read_coco(_ann(tmp_path, images, [_person(1, 1)]), tmp_path)


def _synth_copy(synth_root, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns("cache"))
    return root, json.loads((root / "annotations" / "person_keypoints_val.json").read_text())


def _gt_results(ann):
    return [{"image_id": a["image_id"], "category_id": 1, "score": 1.0, "keypoints": a["keypoints"]}
            for a in ann["annotations"] if a.get("num_keypoints", 1) > 0]


def _eval(root, preds, tmp_path, name):
    (tmp_path / f"{name}.json").write_text(json.dumps(preds) if not isinstance(preds, str) else preds)
    return runner.invoke(app, ["eval", "--data", str(root), "--predictions", str(tmp_path / f"{name}.json"),
                               "--out", str(tmp_path / "runs"), "--json", str(tmp_path / f"{name}.r.json")])


def test_eval_predictions_that_do_not_fit_the_dataset(synth_root, tmp_path):
    """Case 17: ids not in the dataset (warned, ignored), no score (1), nested JSON (one line);
    case 19: NaN joint confidences do not turn exact coordinates into AP 0."""
    root, ann = _synth_copy(synth_root, tmp_path)
    gt = _gt_results(ann)
    res = _eval(root, [*gt, dict(gt[0], image_id=10**9)], tmp_path, "foreign")
    assert res.exit_code == 0 and "not in the val split" in res.output, res.output
    assert json.loads((tmp_path / "foreign.r.json").read_text())["coco_gt_boxes"]["AP"] == pytest.approx(1.0)
    res = _eval(root, [{k: v for k, v in r.items() if k != "score"} for r in gt], tmp_path, "noscore")
    assert res.exit_code == 0, res.output
    nan = [dict(r, keypoints=[v if i % 3 != 2 else float("nan") for i, v in enumerate(r["keypoints"])]) for r in gt]
    res = _eval(root, json.dumps(nan), tmp_path, "nan")
    r = json.loads((tmp_path / "nan.r.json").read_text())
    assert res.exit_code == 0 and r["pcp"]["mean"] == 1.0 and r["coco_gt_boxes"]["AP"] == pytest.approx(1.0)
    for name, text, msg in [("deep", "[" * 100000 + "]" * 100000, "nested too deeply"),
                            ("zeros", "0" * 100000, "expected a JSON list")]:
        res = _eval(root, text, tmp_path, name)
        assert res.exit_code == 1 and msg in res.output and "Traceback" not in res.output, res.output


def _png_header(w, h) -> bytes:
    """A PNG that declares w x h pixels (its data ends early): what a 48 KB bomb starts with."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 60001))


def test_an_image_declaring_too_many_pixels_is_not_decoded(tmp_path, caplog):
    """Case 18: a 20000 x 20000 PNG took 2.5 GB."""
    img = np.zeros((23, 37, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp"):
        cv2.imwrite(str(tmp_path / f"s{ext}"), img)
        assert declared_size((tmp_path / f"s{ext}").read_bytes()) == (37, 23), ext
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(20000, 20000))
    assert 20000 * 20000 > MAX_PIXELS and read_rgb(bomb) is None
    assert "20000 x 20000" in caplog.text
    res = runner.invoke(app, ["annotate", str(bomb), str(tmp_path / "s.png"), "--out", str(tmp_path / "o")])
    doc = json.loads((tmp_path / "o" / "keypoints.json").read_text())
    assert [f["source"] for f in doc["failed"]] == [str(bomb)] and len(doc["items"]) == 1
    assert res.exit_code == 1 and "over poser's limit" in res.output


def test_a_mat_file_that_inflates_without_end_is_refused_small(tmp_path):
    """Case 16: a 2 MB joints.mat whose zlib element inflates to 2 GB grew past 8.7 GB."""
    from poser.data.matfile import MAX_INFLATED, read_mat

    comp = zlib.compressobj(9)
    bomb = b"".join(comp.compress(b"\0" * (1 << 24)) for _ in range((MAX_INFLATED >> 24) + 4)) + comp.flush()
    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    path = tmp_path / "joints.mat"
    path.write_bytes(header + struct.pack("<II", 15, len(bomb)) + bomb)
    assert path.stat().st_size < 2 << 20
    with pytest.raises(PoserError, match="inflates past"):
        read_mat(path)
