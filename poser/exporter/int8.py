"""int8 post-training quantization (OpenVINO NNCF), calibrated on a dataset's training crops.

The calibration set is what the network sees at inference: crops of training persons' boxes
(the ground-truth-box protocol) and the crops of the person search on whole training photos
(its first pass is the whole photo, its later passes loose boxes). Activations' ranges come
from those crops; weights are quantized per channel. Whether the result is accurate enough is
measured, not assumed: docs gives the shipped model's PCP in both protocols.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from poser.data.cache import Cache, CacheSpec, cache_dir
from poser.data.datasets import open_dataset
from poser.data.prepare import prepare_split
from poser.errors import PoserError
from poser.imageio import read_rgb
from poser.inference.predictor import Predictor
from poser.runtime import cache
from poser.runtime import networks as rt


def calibration_crops(predictor: Predictor, root: Path, boxes: int = 256, photos: int = 48,
                      seed: int = 0) -> list[np.ndarray]:
    """Per stage, (M, 3, S, S) normalised inputs the predictor feeds its networks on the training
    split of `root`: `boxes` person-box crops and the search's crops of `photos` whole photos."""
    spec = CacheSpec(size=predictor.spec.cache_size)
    if prepare_split(root, "train", spec)["instances"] == 0:
        raise PoserError(f"`calibration` {root}: no training instances to calibrate on")
    cache, rng = Cache(cache_dir(root, "train", spec)), np.random.default_rng(seed)
    seen: list[list[np.ndarray]] = [[] for _ in range(predictor.num_stages)]

    class Recorder:             # a network that keeps what it is fed (the runtime mechanism)
        def __init__(self, net, into: list) -> None:
            self.net, self.into = net, into

        def __call__(self, x):
            self.into.append(rt.as_numpy(x).copy())
            return self.net(x)

    networks = predictor.networks
    predictor.networks = [Recorder(n, s) for n, s in zip(networks, seen, strict=True)]
    try:
        idx = rng.choice(len(cache), min(boxes, len(cache)), replace=False)
        for a in range(0, len(idx), 32):
            part = idx[a: a + 32]
            predictor.predict_batch(torch.stack([cache.image(int(i)) for i in part]), cache.boxes[part], flip=False)
        inst = open_dataset(root, "train")
        files = sorted({inst.image_root / f for f in inst.files})
        pick = [read_rgb(files[int(i)]) for i in rng.choice(len(files), min(photos, len(files)), replace=False)]
        pick = [im for im in pick if im is not None]
        for a in range(0, len(pick), 16):
            predictor.find_person(pick[a: a + 16], flip=False)   # mirrored crops: the same inputs, 2x the time
    finally:
        predictor.networks = networks
    return [np.concatenate(s) for s in seen]


def export_int8(weights: Path, dst: Path, calibration: Path) -> dict:
    """OpenVINO IR with int8
    weights and activations (dst.xml + .bin, dst.stage2.xml, ... for a cascade), the spec and
    the source weights' hash in its rt_info, so `--runtime auto` finds it beside the weights."""
    for module in ("onnx", "openvino", "nncf"):
        if importlib.util.find_spec(module) is None:
            raise PoserError(f"int8 export: the {module} package is not installed (pip install \"poser[int8]\")")
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    weights, dst = Path(weights), Path(dst)
    predictor = Predictor.from_file(weights, runtime="torch")
    crops = calibration_crops(predictor, Path(calibration))
    onnx = cache.cached_onnx(weights, list(zip(predictor.models, predictor.spec.stages, strict=True)))
    files = []
    for s, (path, x, spec) in enumerate(zip(onnx, crops, predictor.spec.stages, strict=True), start=1):
        model = rt.ov_core().read_model(str(path))
        data = nncf.Dataset([x[i: i + 1] for i in range(len(x))])
        # CPUs without VNNI (AVX2 only) multiply int8 pairs into saturating 16-bit sums: with full
        # 8-bit weights the shipped model fell from PCP 0.676 to 0.471 there. 7-bit weights in every
        # layer (NNCF's overflow fix; by default it fixes only the first) cannot saturate.
        q = nncf.quantize(model, data, subset_size=len(x), preset=nncf.QuantizationPreset.MIXED,
                          advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE))
        q.set_rt_info(json.dumps(spec.to_meta()), rt.META_KEY)
        q.set_rt_info("int8", rt.PRECISION_KEY)
        q.set_rt_info(cache.weights_key(weights), rt.SOURCE_KEY)
        out = dst.with_name(f"{dst.stem}{'' if s == 1 else f'.stage{s}'}.xml")
        ov.save_model(q, str(out), compress_to_fp16=False)
        files.append(str(out))
    return {"src": str(weights), "format": "openvino", "precision": "int8", "files": files,
            "stages": len(files), "calibration": {"data": str(calibration), "crops": [len(x) for x in crops]}}
