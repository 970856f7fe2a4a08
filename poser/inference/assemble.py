"""A model as every caller loads it (`poser.load()`, `poser annotate`, `poser eval`): a weights
file (the shipped model by default) on a device and runtime, and a person detector if named."""

from __future__ import annotations

from pathlib import Path

from poser.device import resolve_device
from poser.inference.predictor import Predictor, resolve_weights


def load_predictor(weights: str | Path | None = None, device: str = "auto", stages: int | None = None,
                   runtime: str = "auto", precision: str = "auto") -> Predictor:
    """The model in `weights` (None: the shipped one) on `device` ('auto': CUDA when available)."""
    return Predictor.from_file(resolve_weights(weights), resolve_device(device), stages, runtime, precision)


def load_detector(name: str | None, weights: str | Path | None, device, person_threshold: float):
    """The person detector `name` (poser.detect.detectors; None: none). It keeps candidates down
    to 0.05 so that `person_threshold` is applied once, by `detect.boxes.select`."""
    if name is None:
        return None
    from poser.detect.detectors import create_detector

    return create_detector(name, weights, device, min(person_threshold, 0.05))
