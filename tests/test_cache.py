import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from poser import geometry as g
from poser.data.cache import Cache, CacheDataset, CacheSpec, build_cache, cache_dir, context_square
from poser.data.datasets import open_dataset
from poser.data.prepare import prepare_split
from poser.errors import PoserError


def test_cache_holds_the_shared_geometry_crop(synth_root, tmp_path):
    inst = open_dataset(synth_root, "train")
    spec = CacheSpec(size=128, margin=2.0)
    counts = build_cache(inst, tmp_path / "c", spec, workers=2)
    cache = Cache(tmp_path / "c")
    assert counts["instances"] == len(cache) == len(inst)
    order = {int(a): i for i, a in enumerate(inst.ann_ids)}
    for k in range(0, len(cache), 7):
        i = order[int(cache.ann_ids[k])]
        wh = inst.image_sizes[inst.image_index[i]][None].astype(float)
        center, side = context_square(inst.boxes[i][None], wh, spec.margin, spec.context)
        m = g.crop_matrix(center[0], side[0], spec.size)
        assert np.allclose(cache.matrix[k], m, atol=1e-3)
        lab = inst.keypoints[i, :, 2] > 0
        assert np.allclose(cache.keypoints[k, lab, :2], g.transform_points(m, inst.keypoints[i, lab, :2]), atol=1e-3)
        assert (cache.keypoints[k, ~lab, :2] == 0).all()
        assert np.array_equal(cache.keypoints[k, :, 2], inst.keypoints[i, :, 2])
        # Luminance (JPEG subsamples colour): re-encoding loss only, far below a 1-px shift.
        gray = cv2.imread(str(inst.path(i)), cv2.IMREAD_GRAYSCALE)
        want = g.warp_image(gray, m, spec.size).astype(float)
        rgb = cache.image(k).permute(1, 2, 0).numpy()
        got = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(float)
        err, shifted = np.abs(got - want).mean(), np.abs(got[:, 1:] - want[:, :-1]).mean()
        assert err < 0.3 * shifted, (err, shifted)
        # The crop holds the person box grown x2 and as much of the photo as 3x the box allows.
        x, y, w, h = cache.boxes[k]
        assert x + w / 2 - max(w, h) >= -0.51 and x + w / 2 + max(w, h) <= 127.51 and max(w, h) <= 64.01
        px, py, pw, ph = cache.photos[k]
        assert np.allclose([px, py, pw, ph], [*g.transform_points(m, [[-0.5, -0.5]])[0], *(wh[0] * m[0, 0])],
                           atol=1e-3)
        photo_side, box_side = max(wh[0]), max(inst.boxes[i][2:])
        if photo_side <= 1.5 * box_side:        # small photos fit whole
            assert px >= -0.51 and py >= -0.51 and px + pw <= 127.51 and py + ph <= 127.51


def test_without_context_the_person_box_sits_in_the_middle_half(synth_root, tmp_path):
    build_cache(open_dataset(synth_root, "val"), tmp_path / "c", CacheSpec(size=128, margin=2.0, context=0))
    cache = Cache(tmp_path / "c")
    for x, y, w, h in cache.boxes:
        assert abs(x + w / 2 - 63.5) < 1 and abs(y + h / 2 - 63.5) < 1 and max(w, h) == pytest.approx(64, abs=0.1)


def test_loader_workers_read_the_same_samples(synth_root, tmp_path):
    build_cache(open_dataset(synth_root, "val"), tmp_path / "c", CacheSpec(size=64))
    ds = CacheDataset(tmp_path / "c")
    batches = list(DataLoader(ds, batch_size=4, num_workers=2))
    imgs = torch.cat([b[0] for b in batches])
    assert imgs.shape == (len(ds), 3, 64, 64) and imgs.dtype == torch.uint8
    for i in range(len(ds)):
        assert torch.equal(imgs[i], ds[i][0])
        assert torch.equal(torch.cat([b[1] for b in batches])[i], ds[i][1])


def test_unreadable_image_is_counted_and_the_rest_built(synth_root, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(synth_root, root)
    inst = open_dataset(root, "val")
    victim = inst.path(0)
    victim.write_bytes(b"\xff\xd8 not really a jpeg")
    n_victim = int((inst.image_index == inst.image_index[0]).sum())
    counts = build_cache(inst, tmp_path / "c", CacheSpec(size=64))
    assert counts["skipped"]["unreadable_image"] == n_victim
    assert len(Cache(tmp_path / "c")) == len(inst) - n_victim


def test_prepare_split_reuses_until_the_source_changes(synth_root, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(synth_root, root)
    spec = CacheSpec(size=64)
    first = prepare_split(root, "val", spec)
    assert not first["reused"] and first["instances"] > 0
    assert prepare_split(root, "val", spec)["reused"]
    ann = root / "annotations" / "person_keypoints_val.json"
    os.utime(ann, (1, 1))                                          # the annotations changed
    assert not prepare_split(root, "val", spec)["reused"]
    assert prepare_split(root, "val", spec, force=True)["reused"] is False
    assert (cache_dir(root, "val", spec) / "index.npz").is_file()


def test_not_a_cache_is_a_clear_error(tmp_path):
    with pytest.raises(PoserError, match="not a prepared cache"):
        Cache(tmp_path)
