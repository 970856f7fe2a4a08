"""The person search: no boxes, a whole photo in, the person found by the model itself."""

import cv2
import numpy as np

from poser.evaluate.metrics import pdj
from poser.inference.predictor import Predictor, search_box
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
    with_box = np.stack([r.coords[0] for r in pred.predict_images(list(images), [b[None] for b in boxes])])
    whole = np.stack([r.coords[0] for r in pred.find_person(list(images), passes=0)])
    found = pred.find_person(list(images))
    searched = np.stack([r.coords[0] for r in found])
    score = {k: pdj(v, gt, COCO17)["at_0.2"] for k, v in
             (("true box", with_box), ("whole photo only", whole), ("search", searched))}
    print(score)
    assert score["search"] > score["whole photo only"] + 0.15         # the search is what finds them
    assert score["search"] > 0.8 * score["true box"]                  # ... about as well as the true box
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
