"""Drawing skeletons: limbs coloured by side, faint or skipped joints by confidence.

Images are BGR uint8 (OpenCV's order), drawn in place. Coordinates in image pixels. Every limb
and joint has a dark outline, so a skeleton reads on any background, a limb of its own colour
included (the synthetic figures wear red-orange and blue limbs).
"""

from __future__ import annotations

import cv2
import numpy as np

from poser.skeletons import Skeleton

# mmpose's convention: left green, right orange, centre light blue (BGR)
SIDE_COLOURS = {"L": (0, 255, 0), "R": (0, 128, 255), "C": (255, 153, 51)}
OUTLINE = (20, 20, 20)


# Distinct, saturated BGR colours for tracked people (Tableau 10 without its greys).
TRACK_COLOURS = ((180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
                 (75, 86, 140), (194, 119, 227), (34, 189, 188), (207, 190, 23))


def track_colour(track_id: int) -> tuple[int, int, int]:
    """The colour of a tracked person: the same id, the same colour, in every frame."""
    return TRACK_COLOURS[track_id % len(TRACK_COLOURS)]


def line_width(shape: tuple[int, ...]) -> int:
    """Stroke width scaled to the image: 2 px up to 1000 px, 5 px at 1920 x 1080 (1 px lines
    vanish on a small photo's skeleton)."""
    return max(2, round(max(shape[:2]) / 400))


def _limb_colour(skeleton: Skeleton, a: int, b: int) -> tuple[int, int, int]:
    sides = skeleton.sides
    side = sides[a] if sides[a] == sides[b] else sides[a] if sides[a] != "C" else sides[b]
    return SIDE_COLOURS[side]


def draw_pose(img: np.ndarray, coords: np.ndarray, skeleton: Skeleton, scores: np.ndarray | None = None,
              min_score: float = 0.2, width: int | None = None, colour: tuple[int, int, int] | None = None) -> None:
    """Draw one person: coords (K, 2), scores (K,) in [0, 1] or None (all confident).
    Joints below `min_score` are skipped; those below 2 x min_score are drawn faint
    (blended at 40%), as are limbs touching them. `colour` overrides the side colours."""
    k = skeleton.num_joints
    s = np.ones(k) if scores is None else np.asarray(scores, float)
    ok = np.isfinite(coords).all(-1) & (s >= min_score)
    if not ok.any():
        return
    faint = s < 2 * min_score
    w = width or line_width(img.shape)
    # Work on the person's region only: a full-frame copy and blend would cost more than the
    # model on a video frame.
    pad = 2 * w + 4
    lo = np.floor(coords[ok].min(0)).astype(int) - pad
    hi = np.ceil(coords[ok].max(0)).astype(int) + pad
    x0, y0 = max(0, lo[0]), max(0, lo[1])
    x1, y1 = min(img.shape[1], hi[0]), min(img.shape[0], hi[1])
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    strong, weak = roi.copy(), roi.copy()
    pts = np.round((np.nan_to_num(coords) - [x0, y0]) * 16).astype(np.int64)  # 4 bits of sub-pixel precision
    edge = max(1, w // 2)           # outline width on each side of a stroke
    limbs = [(a, b) for a, b in skeleton.draw_limbs if ok[a] and ok[b]]
    for a, b in limbs:              # outlines first, so no limb's outline crosses another limb
        layer = weak if faint[a] or faint[b] else strong
        cv2.line(layer, tuple(pts[a]), tuple(pts[b]), OUTLINE, w + 2 * edge, cv2.LINE_AA, shift=4)
    for a, b in limbs:
        layer = weak if faint[a] or faint[b] else strong
        cv2.line(layer, tuple(pts[a]), tuple(pts[b]), colour or _limb_colour(skeleton, a, b), w, cv2.LINE_AA,
                 shift=4)
    for j in np.flatnonzero(ok):
        layer = weak if faint[j] else strong
        c = colour or SIDE_COLOURS[skeleton.sides[j]]
        cv2.circle(layer, tuple(pts[j]), (w + 1 + edge) * 16, OUTLINE, -1, cv2.LINE_AA, shift=4)
        cv2.circle(layer, tuple(pts[j]), (w + 1) * 16, c, -1, cv2.LINE_AA, shift=4)
    # Faint strokes are the weak layer blended over the strong one.
    changed = np.any(weak != roi, axis=-1)
    if changed.any():
        strong[changed] = cv2.addWeighted(weak, 0.4, strong, 0.6, 0)[changed]
    roi[:] = strong


def draw_box(img: np.ndarray, box: np.ndarray, colour: tuple[int, int, int] = (200, 200, 200)) -> None:
    x, y, w, h = (int(round(v)) for v in box)
    cv2.rectangle(img, (x, y), (x + w, y + h), colour, max(1, line_width(img.shape) // 2))


def label(img: np.ndarray, text: str, org: tuple[int, int] = (4, 16)) -> None:
    """White text on a dark band, scaled down to fit the image's width (a small tile's label
    would otherwise run off its edge into the next tile)."""
    scale = 0.45
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    room = img.shape[1] - org[0] - 2
    if tw > room > 0:
        scale *= room / tw
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = org
    band = img[max(0, y - th - 3): min(img.shape[0], y + base + 1), max(0, x - 2): min(img.shape[1], x + tw + 2)]
    band[:] = (band * 0.35).astype(img.dtype)           # darken behind the text: readable on any photo
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
