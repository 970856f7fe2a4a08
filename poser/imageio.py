"""Reading images as RGB, once: OpenCV >= 4.11 decodes straight to RGB; older versions
(which pyproject allows) decode BGR and convert."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def decode_rgb(buf: np.ndarray) -> np.ndarray | None:
    """Encoded image bytes -> (H, W, 3) uint8 RGB, or None when they do not decode."""
    if _IMREAD_RGB is not None:
        return cv2.imdecode(buf, _IMREAD_RGB)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_rgb(path: str | Path) -> np.ndarray | None:
    """An image file -> (H, W, 3) uint8 RGB, or None when it cannot be read."""
    if _IMREAD_RGB is not None:
        return cv2.imread(str(path), _IMREAD_RGB)
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def truncated_jpeg(path: str | Path) -> bool:
    """Whether a JPEG file ends before its end-of-image marker (FF D9): libjpeg then decodes
    what is there ("Premature end of JPEG file") and greys out the rest, so the image reads
    as a success. Other formats: False."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\xff\xd8":
                return False
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64))
            tail = f.read().rstrip(b"\x00\r\n \t")      # padding some writers leave after the marker
    except OSError:
        return False
    return not tail.endswith(b"\xff\xd9")
