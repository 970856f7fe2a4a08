"""`Poses`: the people found in one image or frame, the one result type of poser.

The Python API returns it, `poser annotate` writes its `to_json` records into keypoints.json
and draws with its `draw`, `poser eval` scores its `to_coco` results. Shapes: N people, K
joints, S cascade stages; coordinates in the source image's pixels (pixel centres, OpenCV's
convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poser.inference.prediction import Prediction
from poser.skeletons import Skeleton


def coco_results(image_ids: np.ndarray, coords: np.ndarray, scores: np.ndarray) -> list[dict]:
    """Poses (N, K, 2) and scores (N, K) of images `image_ids` (N,) in COCO keypoint results
    format; the person score is the mean joint score."""
    out = []
    for i in range(len(coords)):
        kp = np.concatenate([coords[i], scores[i][:, None]], -1)
        out.append({"image_id": int(image_ids[i]), "category_id": 1,
                    "keypoints": [round(float(v), 2) for v in kp.reshape(-1)], "score": float(scores[i].mean())})
    return out


MIN_SCORE = 0.2        # joints scored below are not drawn and not `visible` (annotate's --min-score)


@dataclass
class Poses:
    """keypoints (N, K, 2) px; scores (N, K) in [0, 1] (what they mean: codec.py, the decode);
    in_crop (N, K): the model's probability that the joint is inside the person's crop;
    `visible` (N, K) bool, as in keypoints.json: in_crop >= 0.5 and score >= MIN_SCORE
    (`visible_at` for another threshold); boxes (N, 4) xywh used for each person and
    box_scores (N,) (1.0 where the person search found it); stages (N, S, K, 2): a cascade's
    estimate after each stage; track_ids (N,) in a video."""

    keypoints: np.ndarray
    scores: np.ndarray
    in_crop: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    skeleton: Skeleton
    stages: np.ndarray | None = None
    track_ids: np.ndarray | None = None

    @classmethod
    def from_prediction(cls, pred: Prediction, skeleton: Skeleton, box_scores: np.ndarray | None = None,
                        track_ids=None) -> Poses:
        """From a Predictor's output; `box_scores` (N,) default 1 (a given box, or the search's)."""
        n = len(pred)
        return cls(pred.keypoints, pred.scores, pred.in_crop, pred.boxes,
                   np.ones(n) if box_scores is None else np.asarray(box_scores, np.float64),
                   skeleton, pred.stages, None if track_ids is None else np.asarray(track_ids, int))

    def __len__(self) -> int:
        return len(self.keypoints)

    @property
    def visible(self) -> np.ndarray:
        """(N, K) bool: the joint is in the crop (probability >= 0.5) and scores >= MIN_SCORE."""
        return self.visible_at(MIN_SCORE)

    def visible_at(self, min_score: float) -> np.ndarray:
        return (self.in_crop >= 0.5) & (self.scores >= min_score)

    def __getitem__(self, i) -> Poses:
        """A subset (an index, slice or mask) as Poses."""
        idx = np.arange(len(self))[i]
        idx = np.atleast_1d(idx)
        return Poses(self.keypoints[idx], self.scores[idx], self.in_crop[idx], self.boxes[idx],
                     self.box_scores[idx], self.skeleton, None if self.stages is None else self.stages[idx],
                     None if self.track_ids is None else self.track_ids[idx])

    def to_json(self, min_score: float = MIN_SCORE) -> list[dict]:
        """The `poser-keypoints` person records: box, box score, track id (null outside a
        video), keypoints by joint name as [x, y, score], and `visible` (`visible_at(min_score)`)."""
        out = []
        joints = self.skeleton.joints
        visible = self.visible_at(min_score)
        for i in range(len(self)):
            xy, sc, vis = self.keypoints[i], self.scores[i], visible[i]
            out.append({
                "track_id": None if self.track_ids is None else int(self.track_ids[i]),
                "box": [round(float(v), 2) for v in self.boxes[i]], "box_score": round(float(self.box_scores[i]), 4),
                "keypoints": {j: [round(float(xy[k, 0]), 2), round(float(xy[k, 1]), 2), round(float(sc[k]), 4)]
                              for k, j in enumerate(joints)},
                "visible": {j: bool(vis[k]) for k, j in enumerate(joints)},
            })
        return out

    def to_coco(self, image_id: int) -> list[dict]:
        """COCO keypoint results (what pycocotools and `poser eval --predictions` read); the
        person score is the box score x the mean joint score (COCO ranks people by it)."""
        out = coco_results(np.full(len(self), image_id), self.keypoints, self.scores)
        for person, box_score in zip(out, self.box_scores, strict=True):
            person["score"] *= float(box_score)
        return out

    def draw(self, image: np.ndarray, min_score: float = MIN_SCORE, boxes: bool = True,
             colour_by_track: bool | None = None) -> np.ndarray:
        """Draw every person on `image` (BGR uint8, in place; returned too): limbs coloured by
        side, or by track in a video (each track its own colour, labelled with its id)."""
        from poser.inference.draw import draw_box, draw_pose, label, track_colour

        by_track = self.track_ids is not None if colour_by_track is None else colour_by_track
        for i in range(len(self)):
            colour = track_colour(int(self.track_ids[i])) if by_track and self.track_ids is not None else None
            if boxes:
                draw_box(image, self.boxes[i], colour or (200, 200, 200))
            if colour is not None:
                label(image, f"#{int(self.track_ids[i])}", (int(self.boxes[i][0]) + 3, int(self.boxes[i][1]) + 14))
            draw_pose(image, self.keypoints[i], self.skeleton, self.scores[i], min_score, colour=colour)
        return image
