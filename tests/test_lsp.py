import cv2
import numpy as np
import pytest
import scipy.io
from conftest import make_lsp_folder

from poser.data.datasets import open_dataset
from poser.data.lsp import read_lsp
from poser.data.matfile import read_mat
from poser.errors import PoserError
from poser.geometry import PERSON_BOX_MARGIN as BOX_MARGIN
from poser.skeletons import LSP14


def test_lspet_layout_visibility_and_box(tmp_path):
    xy, flag = make_lsp_folder(tmp_path, "lspet")
    inst = read_lsp(tmp_path)
    assert inst.skeleton is LSP14 and len(inst) == 5
    v = inst.keypoints[..., 2]
    assert np.array_equal(v, np.where(flag == 1, 2, 0))
    assert (inst.keypoints[v == 0, :2] == 0).all()
    assert np.allclose(inst.keypoints[v == 2, :2], xy[flag == 1])
    # Box = extent of the labelled joints, grown by BOX_MARGIN on each side.
    vis = xy[0][flag[0] == 1]
    lo, hi = vis.min(0), vis.max(0)
    assert np.allclose(inst.boxes[0], [*(lo - BOX_MARGIN * (hi - lo)), *((hi - lo) * (1 + 2 * BOX_MARGIN))], atol=1e-3)
    assert np.array_equal(inst.image_sizes[:, 0], [120, 121, 122, 123, 124])
    assert inst.files[2] == "images/im00003.jpg"


def test_lsp_layout_occlusion_flags(tmp_path):
    xy, flag = make_lsp_folder(tmp_path, "lsp")
    inst = read_lsp(tmp_path)
    v = inst.keypoints[..., 2]
    assert np.array_equal(v, np.where(flag == 1, 1, 2))      # every LSP joint is labelled
    assert np.allclose(inst.keypoints[..., :2], xy, atol=1e-4)
    assert inst.files[0] == "images/im0001.jpg"


def test_missing_images_and_empty_annotations_are_counted(tmp_path):
    make_lsp_folder(tmp_path, "lspet")
    (tmp_path / "images" / "im00002.jpg").unlink()
    (tmp_path / "images" / "im00003.jpg").write_bytes(b"not a jpeg")
    inst = read_lsp(tmp_path)
    assert len(inst) == 3 and dict(inst.skipped) == {"missing_image": 1, "bad_image": 1}
    assert list(inst.image_ids) == [1, 4, 5]


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(PoserError, match="no joints.mat"):
        read_lsp(tmp_path)
    (tmp_path / "joints.mat").write_bytes(b"MATLAB 7.3 MAT-file" + bytes(200))
    with pytest.raises(PoserError, match="v7.3"):
        read_lsp(tmp_path)
    (tmp_path / "joints.mat").write_bytes(b"garbage")
    with pytest.raises(PoserError, match="not a MATLAB"):
        read_lsp(tmp_path)
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": np.zeros((2, 14, 3))})
    with pytest.raises(PoserError, match="expected 3x14xN"):
        read_lsp(tmp_path)
    good = tmp_path / "good.mat"
    scipy.io.savemat(good, {"joints": np.zeros((3, 14, 30))})
    (tmp_path / "joints.mat").write_bytes(good.read_bytes()[:400])    # truncated
    with pytest.raises(PoserError, match="corrupt"):
        read_lsp(tmp_path)


@pytest.mark.parametrize("compress", [False, True])
def test_matfile_reader_agrees_with_scipy(tmp_path, compress):
    arrays = {"joints": np.random.default_rng(0).normal(size=(14, 3, 11)),
              "ints": np.arange(12, dtype=np.int32).reshape(3, 4), "small": np.array([[7.0]])}
    scipy.io.savemat(tmp_path / "a.mat", {**arrays, "name": "text"}, do_compression=compress)
    got = read_mat(tmp_path / "a.mat")
    ref = scipy.io.loadmat(tmp_path / "a.mat")
    assert set(got) == set(arrays)
    for k in arrays:
        assert got[k].dtype == ref[k].dtype and np.array_equal(got[k], ref[k])


def test_real_lspet(lspet):
    ref = scipy.io.loadmat(lspet / "joints.mat")["joints"]
    assert np.array_equal(read_mat(lspet / "joints.mat")["joints"], ref)
    inst = read_lsp(lspet)
    assert len(inst) == 9000 and not inst.skipped
    # Visible joints lie inside their image (crowd-sourced: allow a handful of strays).
    sizes = inst.image_sizes[inst.image_index]
    v = inst.keypoints[..., 2] == 2
    x, y = inst.keypoints[..., 0], inst.keypoints[..., 1]
    inside = (x >= 0) & (y >= 0) & (x <= sizes[:, None, 0]) & (y <= sizes[:, None, 1])
    assert inside[v].mean() > 0.999
    assert v.mean() > 0.85                      # LSPET marks ~12% of joints invisible
    for i in (0, 4321, 8999):                   # header sizes agree with decoded images
        h, w = cv2.imread(str(inst.path(i))).shape[:2]
        assert tuple(inst.image_sizes[i]) == (w, h)
    val, train = open_dataset(lspet, "val"), open_dataset(lspet, "train")
    assert len(val) == 1000 and val.image_ids.min() == 8001 and val.image_ids.max() == 9000
    assert len(train) == 8000 and train.image_ids.max() == 8000


def test_unknown_mat_element_types_and_nan_joints_are_handled(tmp_path):
    import struct

    good = tmp_path / "good.mat"
    scipy.io.savemat(good, {"joints": np.zeros((3, 14, 3))}, do_compression=False)
    raw = bytearray(good.read_bytes())
    # The first element of the matrix body (array flags) is tagged miUINT32 (6): make it type 99.
    body = 128 + 8
    assert struct.unpack_from("<I", raw, body)[0] == 6
    struct.pack_into("<I", raw, body, 99)
    bad = tmp_path / "bad.mat"
    bad.write_bytes(bytes(raw))
    with pytest.raises(PoserError, match="unknown element type"):
        read_mat(bad)
    # LSPET with a NaN joint marked visible: that person is skipped and counted, the rest read.
    (tmp_path / "nan").mkdir()
    make_lsp_folder(tmp_path / "nan", "lspet")
    m = scipy.io.loadmat(tmp_path / "nan" / "joints.mat")["joints"]            # 14 x 3 x N
    m[0, :, 1] = [np.nan, np.nan, 1]
    scipy.io.savemat(tmp_path / "nan" / "joints.mat", {"joints": m})
    inst = read_lsp(tmp_path / "nan")
    assert inst.skipped["non_finite_joints"] == 1 and len(inst) == 4 and np.isfinite(inst.boxes).all()
