"""The reference model shipped inside the package: present, small, self-describing, the default
of annotate and eval, and as accurate on held-out LSPET photos as docs/reference-model.md says."""

import json

import cv2
import numpy as np
from typer.testing import CliRunner

from poser.cli import app
from poser.data.lsp import read_lsp
from poser.evaluate.metrics import pcp, pdj
from poser.imageio import read_rgb
from poser.inference.predictor import DEFAULT_WEIGHTS, Predictor
from poser.models.weights import read_meta
from poser.skeletons import LSP14
from poser.synth.dataset import one_person

runner = CliRunner()

# Measured with the shipped file on photos im08001-im08200 (the first 200 of the validation
# split) through the photo path annotate uses, flip test on; docs/reference-model.md has all 1,000.
GT_BOX_PCP, GT_BOX_PDJ = 0.656, 0.672         # boxes: the labelled joints' extent + 15% a side
WHOLE_PCP, WHOLE_PDJ = 0.632, 0.654         # no boxes: the person search from the whole photo
# The COCO-17 model: its limbs on the same 200 photos (boxes, flip), and the 12 people of the COCO
# sample (COCO's boxes + 15%, the model's default: flip test on): PCP and COCO AP
# (benchmarks/coco_sample.py measures the same).
COCO17_LSPET_PCP, COCO17_SAMPLE_PCP, COCO17_SAMPLE_AP = 0.654, 0.756, 0.484


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


def _held_out(lspet, n: int = 200):
    inst = read_lsp(lspet, "val")
    return inst, [read_rgb(inst.path(i)) for i in range(n)], inst.keypoints[:n]      # read as annotate does


def test_shipped_model_on_held_out_lspet_photos_with_boxes(lspet):
    inst, images, gt = _held_out(lspet)
    predictor = Predictor.from_file(DEFAULT_WEIGHTS, "cpu")
    assert predictor.flip_test                  # the shipped model's default: the numbers below are with it
    out = predictor.predict_images(images, [inst.boxes[i][None] for i in range(len(images))])
    pred = np.stack([o.keypoints[0] for o in out])
    got_pcp, got_pdj = pcp(pred, gt, LSP14)["mean"], pdj(pred, gt, LSP14)["at_0.2"]
    assert got_pcp > GT_BOX_PCP - 0.03 and got_pdj > GT_BOX_PDJ - 0.03, (got_pcp, got_pdj)


def test_shipped_model_finds_the_person_in_held_out_lspet_photos(lspet):
    _, images, gt = _held_out(lspet)
    predictor = Predictor.from_file(DEFAULT_WEIGHTS, "cpu")
    pred = np.stack([o.keypoints[0] for o in predictor.find_person(images)])
    got_pcp, got_pdj = pcp(pred, gt, LSP14)["mean"], pdj(pred, gt, LSP14)["at_0.2"]
    assert got_pcp > WHOLE_PCP - 0.03 and got_pdj > WHOLE_PDJ - 0.03, (got_pcp, got_pdj)


def test_the_coco17_model_is_shipped_by_name_and_holds_its_numbers(lspet, coco_sample):
    """`poser.load("coco17")`: COCO-17 joints, its limbs on the held-out LSPET photos (boxes,
    flip; LSP's joints converted to COCO's, the face not scored) and, on the COCO sample's
    people with COCO's boxes, PCP and COCO AP through pycocotools on `to_coco()` as it is."""
    import poser
    from poser.evaluate.metrics import coco_keypoint_ap
    from poser.geometry import PERSON_BOX_MARGIN
    from poser.inference.predictor import SHIPPED
    from poser.skeletons import COCO17, convert

    assert SHIPPED["coco17"].stat().st_size <= 25_000_000 and read_meta(SHIPPED["coco17"])["skeleton"] == "coco17"
    inst, images, gt = _held_out(lspet)
    predictor = Predictor.from_file(SHIPPED["coco17"], "cpu")
    out = predictor.predict_images(images, [inst.boxes[i][None] for i in range(len(images))], flip=True)
    pred, gt17 = np.stack([o.keypoints[0] for o in out]), convert(gt, LSP14, COCO17)
    assert pcp(pred, gt17, COCO17)["mean"] > COCO17_LSPET_PCP - 0.03
    model = poser.load("coco17")
    coco = json.loads((coco_sample / "person_keypoints_sample.json").read_text())
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    results, preds, gts = [], [], []
    for iid in files:
        anns = [a for a in coco["annotations"] if a["image_id"] == iid and a.get("num_keypoints", 0) > 0]
        boxes = np.array([a["bbox"] for a in anns], float)
        grow = boxes[:, 2:] * PERSON_BOX_MARGIN
        boxes = np.concatenate([boxes[:, :2] - grow, boxes[:, 2:] + 2 * grow], 1)
        poses = model(cv2.imread(str(next(coco_sample.rglob(files[iid])))), boxes)
        results += poses.to_coco(iid)
        preds += list(poses.keypoints)
        gts += [np.array(a["keypoints"], float).reshape(17, 3) for a in anns]
    assert pcp(np.array(preds), np.array(gts), COCO17)["mean"] > COCO17_SAMPLE_PCP - 0.05
    assert coco_keypoint_ap(coco_sample / "person_keypoints_sample.json", results)["AP"] > COCO17_SAMPLE_AP - 0.05
