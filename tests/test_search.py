"""The person search: no boxes, a whole photo in, the person found by the model itself."""

import cv2
import numpy as np
import pytest

from poser import geometry as g
from poser.evaluate.metrics import pdj
from poser.inference.predictor import DEFAULT_WEIGHTS, Predictor, search_box
from poser.skeletons import COCO17
from poser.synth.dataset import one_person


def _small_people(n: int = 24):
    """Synthetic 400 x 400 photos whose one figure is a quarter of the frame tall."""
    for seed in range(n):
        img, kp, box = one_person(seed, side=400, body=(0.25, 0.3))
        yield cv2.cvtColor(img, cv2.COLOR_BGR2RGB), kp, np.array(box, np.float64)


def test_the_search_finds_a_small_person_about_as_well_as_the_true_box(trained_run):
    pred = Predictor.from_file(trained_run / "best.safetensors")
    images, gts, boxes = zip(*_small_people(), strict=True)
    gt = np.stack(gts)
    with_box = np.stack([r.keypoints[0] for r in pred.predict_images(list(images), [b[None] for b in boxes])])
    whole = np.stack([r.keypoints[0] for r in pred.find_person(list(images), passes=0)])
    found = pred.find_person(list(images))
    searched = np.stack([r.keypoints[0] for r in found])
    score = {k: pdj(v, gt, COCO17)["at_0.2"] for k, v in
             (("true box", with_box), ("whole photo only", whole), ("search", searched))}
    print(score)
    assert score["search"] > score["whole photo only"] + 0.15         # the search is what finds them
    # ... about as well as the true box. Measured on an AVX-512 EPYC (2026-12-05, shipped model): 0.375
    # against 0.429, 0.87x; 0.7x leaves room for another CPU's float sums (a few of ~200 joints).
    assert score["search"] > 0.7 * score["true box"]
    # The search's final boxes sit on the people: centred inside the true box, of a similar size.
    centre = np.stack([r.boxes[0, :2] + r.boxes[0, 2:] / 2 for r in found])
    b = np.stack(boxes)
    inside = ((centre > b[:, :2]) & (centre < b[:, :2] + b[:, 2:])).all(1)
    size = np.array([r.boxes[0, 2:].max() for r in found]) / b[:, 2:].max(1)
    assert inside.mean() >= 0.75 and 0.5 < np.median(size) < 2.0, (inside, size)


def test_search_boxes_hold_every_joint_and_narrow_to_training_boxes():
    from poser.inference.predictor import search_margin

    coords = np.array([[10.0, 10.0], [30.0, 50.0], [20.0, 30.0], [25.0, 40.0]])
    assert np.allclose(search_box(coords), [10 - 0.15 * 20, 10 - 0.15 * 40, 20 * 1.3, 40 * 1.3])
    assert np.allclose(search_box(coords, 0.4)[2:], [20 * 1.8, 40 * 1.8])
    assert search_margin(0, 3) == 0.4 and search_margin(2, 3) == 0.15 and search_margin(0, 1) == 0.15
    assert search_margin(0, 3) > search_margin(1, 3) > search_margin(2, 3)
    # A pose collapsed to one point still gives a box with a size, centred on it.
    point = search_box(np.full((5, 2), 50.0))
    assert np.allclose(point, [46, 46, 8, 8])


def test_scene_starts_tile_the_longer_side_with_squares():
    from poser.inference.search import scene_starts

    wide = scene_starts(np.zeros((360, 640, 3), np.uint8))
    assert wide.tolist() == [[0, 0, 640, 360], [0, 0, 360, 360], [140, 0, 360, 360], [280, 0, 360, 360]]
    tall = scene_starts(np.zeros((500, 300, 3), np.uint8))
    assert tall.tolist() == [[0, 0, 300, 500], [0, 0, 300, 300], [0, 100, 300, 300], [0, 200, 300, 300]]
    assert scene_starts(np.zeros((300, 340, 3), np.uint8)).tolist() == [[0, 0, 340, 300]]   # nearly square


def test_prominence_is_pose_size_times_confidence():
    from poser.inference.search import prominence

    rng = np.random.default_rng(0)
    pose = rng.random((17, 2)) * [40, 100] + [100, 100]           # 40 x 100 px
    shape = (400, 400, 3)
    sure, unsure = np.full(17, 0.8), np.full(17, 0.1)
    assert prominence(pose, sure, shape) < prominence(pose * 2, sure, shape)      # larger wins
    assert prominence(pose * 3, unsure, shape) < prominence(pose, sure, shape)    # unless the model is unsure
    side = np.sqrt(np.ptp(pose[:, 0]) * np.ptp(pose[:, 1]) / 400 ** 2)
    assert prominence(pose, sure, shape) == pytest.approx(0.8 * side)


def test_a_search_from_several_starts_keeps_the_most_prominent_result():
    # Two figures side by side in a wide frame, one large, one small: the search from the scene's
    # starts returns the most prominent of what each start alone finds, and that one's box.
    from poser.inference.predictor import DEFAULT_WEIGHTS
    from poser.inference.search import prominence, scene_starts

    big, _, _ = one_person(1, side=360, body=(0.8, 0.9))
    small, _, _ = one_person(2, side=120, body=(0.7, 0.8))
    frame = np.full((360, 640, 3), 127, np.uint8)
    frame[:, :360], frame[200:320, 460:580] = big, small
    rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    pred = Predictor.from_file(DEFAULT_WEIGHTS)
    starts = scene_starts(rgb)
    alone = [pred.find_person([rgb], starts=[s[None]])[0] for s in starts]
    kept = pred.find_person([rgb], starts=[starts])[0]
    scores = [prominence(r.keypoints[0], r.scores[0], rgb.shape) for r in alone]
    best = alone[int(np.argmax(scores))]
    assert np.abs(kept.keypoints - best.keypoints).max() < 1.0 and np.abs(kept.boxes - best.boxes).max() < 1.0
    assert prominence(kept.keypoints[0], kept.scores[0], rgb.shape) == pytest.approx(max(scores), abs=0.01)
    whole = pred.find_person([rgb])[0]                  # the default start is the whole image alone
    assert np.abs(whole.keypoints - alone[0].keypoints).max() < 1e-6


@pytest.mark.parametrize("passes", [0, 1, 3])
def test_only_the_last_pass_takes_the_flip_test(passes, monkeypatch):
    # The passes before the last only place the box: each image is mirrored once, at its last
    # pass, whose result is what the search returns.
    from poser.inference.predictor import DEFAULT_WEIGHTS

    pred = Predictor.from_file(DEFAULT_WEIGHTS)
    images = [cv2.cvtColor(one_person(s, side=300, body=(0.4, 0.6))[0], cv2.COLOR_BGR2RGB) for s in range(4)]
    calls, real = [], pred.predict_images

    def spy(imgs, boxes, flip=None):
        out = real(imgs, boxes, flip)
        calls.append((flip, [id(i) for i in imgs], out))
        return out

    monkeypatch.setattr(pred, "predict_images", spy)
    # the plain flip test on the last box (the mirrored search is tested below)
    monkeypatch.setattr(pred, "mirror_search", lambda flip, passes: False)
    found = pred.find_person(images, passes=passes, flip=True)
    for image, result in zip(images, found, strict=True):
        mine = [(flip, out[ids.index(id(image))]) for flip, ids, out in calls if id(image) in ids]
        assert [flip for flip, _ in mine] == [False] * (len(mine) - 1) + [True]
        assert 1 <= len(mine) <= passes + 1
        assert np.array_equal(mine[-1][1].keypoints, result.keypoints)
    assert all(ids for _, ids, _ in calls)


def test_a_view_resampled_into_another_crop_keeps_its_peak_on_the_same_image_point():
    from poser.codec import cell_centres, encode_keypoints, expectation, resample_view

    size, h = 64, 16
    prob = np.zeros((1, 1, h, h), np.float32)
    prob[0, 0, 5, 9] = 1.0                                  # one hot cell of the first crop
    vis = np.zeros((1, 1), np.float32)
    m_from = g.crop_matrix(np.array([[100.0, 100.0]]), np.array([80.0]), size)
    same, _ = resample_view((prob, vis), m_from, m_from, size)
    np.testing.assert_allclose(same, prob, atol=1e-6)      # the same crop: the same maps
    # A crop shifted right by a quarter of its side and grown 1.25x: the cell's image point,
    # seen from there, is where the resampled map's expectation lies.
    m_to = g.crop_matrix(np.array([[120.0, 100.0]]), np.array([100.0]), size)
    moved, _ = resample_view((prob, vis), m_from, m_to, size)
    point = g.to_image(m_from, np.array([[[cell_centres(h)[9], cell_centres(h)[5]]]]), size)
    want = encode_keypoints(m_to, point, size)
    assert moved.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(expectation(moved), want, atol=0.5 / h)   # within half a cell


def test_the_search_mirrors_the_pass_before_its_last_instead_of_cropping_the_last_box_twice():
    pred = Predictor.from_file(DEFAULT_WEIGHTS)            # heatmaps, flip test on: the mirrored search
    images = [im for im, _, _ in _small_people(6)]
    assert pred.flip_test and pred.mirror_search(True, 3) and not pred.mirror_search(False, 3)
    assert not pred.mirror_search(True, 1)                  # no pass before the last to lend a mirror
    crops = []
    forward = pred._forward
    pred._forward = lambda s, x: crops.append(len(x)) or forward(s, x)
    found = pred.find_person(images)
    mirrored = sum(crops)
    crops.clear()
    pred.mirror_search = lambda flip, passes: False         # the plain flip test on the last box
    plain = pred.find_person(images)
    # one crop fewer for every image: the last pass crops once, not twice (a settled-or-not
    # decision may differ for an image between the two: a pass more or less, here or there)
    assert sum(crops) - mirrored >= len(images) - 2, (mirrored, sum(crops))
    a, b = (np.stack([r.keypoints[0] for r in x]) for x in (found, plain))
    size = np.array([r.boxes[0, 2:].max() for r in plain])
    # the same people found, the joints where the plain flip test puts them (median within 5% of the box)
    assert np.median(np.linalg.norm(a - b, axis=-1) / size[:, None]) < 0.05
