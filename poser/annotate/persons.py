"""Where a run's person boxes come from: a --boxes file, a built-in detector, or the person search."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from poser.annotate.config import AnnotateConfig
from poser.annotate.inputs import Source
from poser.console import log
from poser.detect.boxes import Boxes, Detections, read_detections, select
from poser.inference.assemble import load_detector
from poser.inference.predictor import Predictor
from poser.inference.search import scene_starts


class PersonBoxes:
    """Where a run's person boxes come from: a --boxes file, a built-in detector, or neither
    (then one person per image, found by the Predictor's person search). Detector output
    goes through the same filter as a file (`detections.select`), and what was used is kept
    in `saved` in the --boxes format, so `--save-boxes` makes the run repeatable."""

    def __init__(self, cfg: AnnotateConfig, predictor: Predictor, detector=None) -> None:
        """`detector`: any callable from RGB images to lists of detections in the --boxes
        format (e.g. a `poser.detect.detectors.PersonDetector`); default: cfg's --boxes or --detector."""
        self.cfg, self.predictor = cfg, predictor
        self.file: Detections | None = None
        self.detector = detector
        self.saved: list[dict] = []
        if cfg.boxes:
            self.file = read_detections(Path(cfg.boxes), cfg.person_threshold, cfg.max_people)
            if self.file.skipped:
                log.warning(f"--boxes {cfg.boxes}: skipped {len(self.file.skipped)} invalid detection(s) "
                            f"(index {', '.join(map(str, self.file.skipped[:10]))})")
        elif cfg.detector and detector is None:
            self.detector = load_detector(cfg.detector, cfg.detector_weights, predictor.device, cfg.person_threshold)

    @property
    def only_search(self) -> bool:
        """No boxes at all: every image and video gets the person search."""
        return self.file is None and self.detector is None

    def uses_search(self, src: Source) -> bool:
        """Whether this source's person is found by the person search: no boxes at all, or a
        video that the --boxes file has no entry for."""
        return self.only_search or (self.file is not None and src.kind == "video"
                                    and not self.file.has(src.path.name))

    def periodic(self, src: Source) -> bool:
        """Whether a video's boxes are looked for every N frames (a detector, or a saved
        detector run) rather than only to start and restart tracks."""
        return self.detector is not None or (self.file is not None and self.file.has_frames(src.path.name))

    def find(self, srcs: list[Source], images: list[np.ndarray], frame: int | None = None) -> list[Boxes]:
        """Person boxes of images (frame None) or of one video frame."""
        if self.detector is not None:
            out = []
            for s, found in zip(srcs, self.detector(images), strict=True):
                b, sc = select(found, self.cfg.person_threshold, self.cfg.max_people)
                extra = {} if frame is None else {"frame": frame}
                self.saved += [{"file_name": s.path.name, **extra, "bbox": [float(v) for v in bb],
                                "score": float(c), "category_id": 1} for bb, c in zip(b, sc, strict=True)]
                out.append((b, sc))
            return out
        return [self._searched(im, frame is not None) if self.uses_search(s) else
                self.file.lookup(s.path.name, frame or 0) for s, im in zip(srcs, images, strict=True)]

    def _searched(self, image: np.ndarray, scene: bool) -> Boxes:
        """The person search's box: from the whole image for a photo (one person, as LSP's
        protocol), from the scene's starts for a video frame, keeping the most prominent person
        (inference/search.py)."""
        starts = [scene_starts(image)] if scene else None
        found = self.predictor.find_person([image], self.cfg.search_passes, self.cfg.flip, starts)[0]
        return found.boxes, np.ones(1)
