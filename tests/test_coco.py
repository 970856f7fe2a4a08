import json

import numpy as np
import pytest

from poser.data.coco import read_coco
from poser.data.datasets import open_dataset
from poser.errors import PoserError
from poser.skeletons import COCO17


def _kps(n_labelled: int) -> list[float]:
    out = []
    for j in range(17):
        out += [10.0 + j, 20.0 + j, 2] if j < n_labelled else [0, 0, 0]
    return out


def _write(tmp_path, anns, images=None, categories=None):
    data = {
        "images": images or [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
                             {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
        "annotations": anns,
        "categories": categories or [{"id": 1, "name": "person", "keypoints": list(COCO17.joints)}],
    }
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(data))
    return p


def test_skips_crowd_empty_and_degenerate_with_counts(tmp_path):
    good = {"image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [1, 2, 30, 40], "keypoints": _kps(5)}
    anns = [
        {**good, "id": 10},
        {**good, "id": 11, "image_id": 2, "keypoints": _kps(17)},
        {**good, "id": 12, "iscrowd": 1},
        {**good, "id": 13, "keypoints": _kps(0)},
        {**good, "id": 14, "bbox": [1, 2, 0.5, 40]},
        {**good, "id": 15, "bbox": [1, 2, float("nan"), 40]},
        {**good, "id": 16, "keypoints": _kps(5)[:-3]},
        {**good, "id": 17, "image_id": 99},
    ]
    inst = read_coco(_write(tmp_path, anns), tmp_path)
    assert list(inst.ann_ids) == [10, 11]
    assert dict(inst.skipped) == {"crowd": 1, "no_keypoints": 1, "degenerate_box": 2,
                                  "bad_keypoints": 1, "missing_image_record": 1}
    assert inst.keypoints.shape == (2, 17, 3)
    assert (inst.keypoints[0, :5, 2] == 2).all() and (inst.keypoints[0, 5:, 2] == 0).all()
    assert inst.path(1) == tmp_path / "b.jpg"
    assert np.array_equal(inst.image_sizes[inst.image_index[1]], [64, 48])
    assert inst.summary()["skipped"]["degenerate_box"] == 2


def test_malformed_inputs_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(PoserError, match="malformed JSON"):
        read_coco(bad, tmp_path)
    with pytest.raises(PoserError, match="not found"):
        read_coco(tmp_path / "missing.json", tmp_path)
    bad.write_text('{"images": []}')
    with pytest.raises(PoserError, match="not a COCO annotation file"):
        read_coco(bad, tmp_path)
    cats = [{"id": 1, "name": "person", "keypoints": ["head", "neck"]}]
    with pytest.raises(PoserError, match="not the COCO-17 skeleton"):
        read_coco(_write(tmp_path, [], categories=cats), tmp_path)
    with pytest.raises(PoserError, match="no category with keypoints"):
        read_coco(_write(tmp_path, [], categories=[{"id": 3, "name": "car"}]), tmp_path)


def test_real_coco_sample(coco_sample):
    inst = read_coco(coco_sample / "person_keypoints_sample.json", coco_sample)
    # 14 real annotations: 2 have no keypoints, none is crowd, no box is degenerate.
    assert len(inst) == 12 and dict(inst.skipped) == {"no_keypoints": 2}
    assert inst.num_images == 4
    for i in range(len(inst)):
        assert inst.path(i).is_file()
        w, h = inst.image_sizes[inst.image_index[i]]
        lab = inst.keypoints[i, :, 2] > 0
        xy = inst.keypoints[i, lab, :2]
        assert (xy >= 0).all() and (xy[:, 0] <= w).all() and (xy[:, 1] <= h).all()
        # Visible joints lie in (or within a few px of) the person box; occluded ones may
        # not (COCO boxes bound the visible segment; one sample has a hidden ankle below it).
        x, y, bw, bh = inst.boxes[i]
        vx = inst.keypoints[i, inst.keypoints[i, :, 2] == 2, :2]
        assert (vx[:, 0] >= x - 5).all() and (vx[:, 0] <= x + bw + 5).all()
        assert (vx[:, 1] >= y - 5).all() and (vx[:, 1] <= y + bh + 5).all()


def test_open_dataset_resolves_coco_layouts(synth_root, tmp_path):
    inst = open_dataset(synth_root, "val")
    assert len(inst) > 0 and inst.path(0).is_file()
    with pytest.raises(PoserError, match="no dataset for split"):
        open_dataset(synth_root, "test")
    with pytest.raises(PoserError, match="not found"):
        open_dataset(tmp_path / "nope")
    # COCO 2017 naming: annotations/person_keypoints_val2017.json + val2017/
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "person_keypoints_val2017.json").write_bytes(
        (synth_root / "annotations" / "person_keypoints_val.json").read_bytes())
    inst2 = open_dataset(tmp_path, "val")
    assert inst2.image_root == tmp_path / "val2017" and len(inst2) == len(inst)
