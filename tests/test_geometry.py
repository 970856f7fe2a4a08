import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from poser import geometry as g

finite = dict(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    x=st.floats(-500, 3000, **finite), y=st.floats(-500, 3000, **finite),
    w=st.floats(2, 2000, **finite), h=st.floats(2, 2000, **finite),
    rot=st.floats(-180, 180, **finite), flip=st.booleans(),
    size=st.sampled_from([64, 128, 220, 256]), margin=st.floats(1.0, 2.0, **finite),
    seed=st.integers(0, 2**31),
)
def test_forward_then_inverse_returns_keypoints(x, y, w, h, rot, flip, size, margin, seed):
    pts = np.random.default_rng(seed).uniform([x - w, y - h], [x + 2 * w, y + 2 * h], (17, 2))
    center, side = g.box_to_square([x, y, w, h], margin)
    m = g.crop_matrix(center, side, size, rot, flip)
    crop = g.transform_points(m, pts)
    norm = g.normalize(crop, size)
    back = g.to_image(m, norm, size)
    assert np.abs(back - pts).max() < 1e-4


def test_box_maps_onto_the_crop_window():
    # Unrotated, margin 1: the square around a box spans exactly [-0.5, 0.5] normalised.
    box = [100.0, 50.0, 40.0, 80.0]                      # tall box: the square is 80 x 80
    center, side = g.box_to_square(box, margin=1.0)
    assert np.allclose(center, [120, 90]) and side == 80
    m = g.crop_matrix(center, side, 128)
    corners = np.array([[80.0, 50.0], [160.0, 130.0], [120.0, 90.0]])
    n = g.normalize(g.transform_points(m, corners), 128)
    assert np.allclose(n, [[-0.5, -0.5], [0.5, 0.5], [0.0, 0.0]])


def test_rotation_and_flip_directions():
    m = g.crop_matrix([0.0, 0.0], 100.0, 100, rotation=90)
    # A point to the right of the centre ends up above it (counter-clockwise, y down),
    # as with cv2.getRotationMatrix2D.
    n = g.normalize(g.transform_points(m, [[10.0, 0.0]]), 100)
    assert np.allclose(n, [[0.0, -0.1]])
    ref = cv2.getRotationMatrix2D((0.0, 0.0), 90, 1.0)
    assert np.allclose(ref[:, :2], m[:, :2])
    mf = g.crop_matrix([0.0, 0.0], 100.0, 100, flip=True)
    assert np.allclose(g.normalize(g.transform_points(mf, [[10.0, 5.0]]), 100), [[-0.1, 0.05]])


def test_vectorised_matrices_match_one_by_one():
    rng = np.random.default_rng(0)
    c, s, r, f = rng.uniform(0, 500, (8, 2)), rng.uniform(20, 300, 8), rng.uniform(-40, 40, 8), rng.random(8) < 0.5
    batch = g.crop_matrix(c, s, 96, r, f)
    assert batch.shape == (8, 2, 3)
    for i in range(8):
        assert np.allclose(batch[i], g.crop_matrix(c[i], s[i], 96, r[i], f[i]))
    pts = rng.uniform(0, 500, (8, 5, 2))
    out = g.transform_points(batch, pts)
    assert np.allclose(out[3], g.transform_points(batch[3], pts[3]))


def _blob_centre(img: np.ndarray) -> np.ndarray:
    w = img.astype(np.float64)
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def test_image_and_keypoints_move_together():
    # A Gaussian blob at a sub-pixel position must land where transform_points puts the
    # position, for plain, rotated, flipped and strongly down-scaled (anti-aliased) crops.
    ys, xs = np.mgrid[:1200, :1600]
    p = np.array([803.3, 611.7])
    img = np.exp(-((xs - p[0]) ** 2 + (ys - p[1]) ** 2) / (2 * 12.0**2)).astype(np.float32)
    for side, rot, flip in [(300, 0, False), (300, 33, False), (400, -70, True), (1500, 10, False)]:
        m = g.crop_matrix([780.0, 630.0], side, 128, rot, flip)
        crop = g.warp_image(img, m, 128)
        expect = g.transform_points(m, p[None])[0]
        assert np.abs(_blob_centre(crop) - expect).max() < 0.05, (side, rot, flip)


def test_downscaled_warp_is_anti_aliased():
    # A 1-px checkerboard squeezed 10x must average to grey, not alias into stripes.
    board = ((np.indices((1000, 1000)).sum(0) % 2) * 255).astype(np.uint8)
    crop = g.warp_image(board, g.crop_matrix([500.0, 500.0], 800.0, 80), 80)
    assert abs(crop.mean() - 127.5) < 3 and crop.std() < 3


def test_keypoint_box_uses_labelled_joints_only():
    kp = np.array([[[10, 20, 2], [30, 60, 1], [500, 500, 0]], [[0, 0, 0], [0, 0, 0], [0, 0, 0]]], float)
    box = g.keypoint_box(kp, margin=0.1)
    assert np.allclose(box[0], [8, 16, 24, 48])
    assert np.allclose(box[1], 0)


def test_torch_batch_warp_matches_opencv():
    import torch

    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.uniform(0, 1, (96, 120, 3)).astype(np.float32), (0, 0), 2)
    m = g.crop_matrix(rng.uniform(30, 90, (4, 2)), rng.uniform(40, 80, 4), 64, rng.uniform(-40, 40, 4), [0, 1, 0, 1])
    batch = torch.from_numpy(img).permute(2, 0, 1)[None].repeat(4, 1, 1, 1)
    out = g.warp_batch(batch, m, 64).permute(0, 2, 3, 1).numpy()
    for i in range(4):
        ref = g.warp_image(img, m[i], 64)
        inner = np.s_[2:-2, 2:-2]                      # borders differ only in edge handling
        assert np.abs(out[i][inner] - ref[inner]).max() < 2e-3
