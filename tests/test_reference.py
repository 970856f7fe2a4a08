"""The reference model shipped inside the package: present, small, self-describing, the default
of annotate and eval, and as accurate on held-out LSPET photos as the README says."""

import json

import cv2
import numpy as np
from typer.testing import CliRunner

from poser.checkpoint import read_meta
from poser.cli import app
from poser.data.lsp import read_lsp
from poser.data.synth import one_person
from poser.metrics import pcp, pdj
from poser.predict import DEFAULT_WEIGHTS, Predictor
from poser.skeletons import LSP14

runner = CliRunner()

# Measured on photos im08001-im08200 (the first 200 of the validation split) with the shipped
# file, through the photo path annotate uses; the README's numbers are for all 1,000.
HELD_OUT_PCP = 0.228
HELD_OUT_PDJ = 0.284


def test_shipped_model_is_small_self_describing_and_the_default(tmp_path):
    assert DEFAULT_WEIGHTS.is_file(), "the package ships poser/weights/reference.safetensors"
    assert DEFAULT_WEIGHTS.stat().st_size <= 25_000_000
    meta = read_meta(DEFAULT_WEIGHTS)
    assert meta["skeleton"] == "lsp14" and meta["joints"] == list(LSP14.joints)
    img, _, _ = one_person(seed=3)
    cv2.imwrite(str(tmp_path / "person.png"), img)
    res = runner.invoke(app, ["annotate", str(tmp_path / "person.png"), "--out", str(tmp_path / "out"),
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    (person,) = doc["items"][0]["persons"]
    assert list(person["keypoints"]) == list(LSP14.joints)
    assert (tmp_path / "out" / "person.png").is_file()


def test_shipped_model_on_held_out_lspet_photos(lspet):
    """Boxes as a user's would be: the visible joints' extent plus 15% a side."""
    inst = read_lsp(lspet, "val")
    n = 200
    predictor = Predictor.from_file(DEFAULT_WEIGHTS, "cpu")
    coords = []
    for s in range(0, n, 25):
        images = [cv2.cvtColor(cv2.imread(str(inst.path(i))), cv2.COLOR_BGR2RGB) for i in range(s, s + 25)]
        out = predictor.predict_images(images, [inst.boxes[i][None] for i in range(s, s + 25)])
        coords += [o["coords"][0] for o in out]
    pred, gt = np.stack(coords), inst.keypoints[:n]
    got_pcp, got_pdj = pcp(pred, gt, LSP14)["mean"], pdj(pred, gt, LSP14)["at_0.2"]
    assert got_pcp > HELD_OUT_PCP - 0.03 and got_pdj > HELD_OUT_PDJ - 0.03, (got_pcp, got_pdj)
