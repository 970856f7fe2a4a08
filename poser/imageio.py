"""Reading images as RGB, once: OpenCV >= 4.11 decodes straight to RGB; older versions
(which pyproject allows) decode BGR and convert."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from poser.console import log

_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
# 134 M pixels (e.g. 16000 x 8000) decode to 400 MB: beyond that a few kilobytes of PNG could
# ask for gigabytes. The size a header declares is checked before decoding.
MAX_PIXELS = 1 << 27
_HEAD = 1 << 18         # bytes read to find the size: a JPEG's EXIF segment comes before it


def decode_rgb(buf: np.ndarray, name: str = "image") -> np.ndarray | None:
    """Encoded image bytes -> (H, W, 3) uint8 RGB, or None when they do not decode or declare
    more than MAX_PIXELS."""
    if _too_large(bytes(buf[:_HEAD]), name):
        return None
    if _IMREAD_RGB is not None:
        return cv2.imdecode(buf, _IMREAD_RGB)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_rgb(path: str | Path) -> np.ndarray | None:
    """An image file -> (H, W, 3) uint8 RGB, or None when it cannot be read (or is too large)."""
    if _IMREAD_RGB is None:
        img = read_bgr(path)
        return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return None if _file_too_large(path) else cv2.imread(str(path), _IMREAD_RGB)


def read_bgr(path: str | Path) -> np.ndarray | None:
    """An image file -> (H, W, 3) uint8 BGR (OpenCV's order), or None as `read_rgb`."""
    return None if _file_too_large(path) else cv2.imread(str(path), cv2.IMREAD_COLOR)


def _file_too_large(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
    except OSError:
        return False            # OpenCV says it cannot read it
    return _too_large(head, str(path))


def _too_large(head: bytes, name: str) -> bool:
    size = declared_size(head)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        log.warning(f"{name}: declares {size[0]} x {size[1]} pixels, over poser's limit of {MAX_PIXELS:,}; "
                    "not decoded")
        return True
    return False


def declared_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) that the start of a PNG, JPEG, GIF, BMP or WebP file declares; None for
    other formats or a header not within `head`."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return struct.unpack("<HH", head[6:10])
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        if kind == b"VP8L":
            b = int.from_bytes(head[21:25], "little")
            return 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF)
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", head[26:30])
            return w & 0x3FFF, h & 0x3FFF
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """Walk the JPEG's segments to its frame header (SOF0-15 but DHT, JPG and DAC)."""
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:      # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", head[i + 5: i + 9])
            return w, h
        if marker in (0x01, *range(0xD0, 0xD8)):     # markers without a length
            i += 2
            continue
        i += 2 + int.from_bytes(head[i + 2: i + 4], "big")
    return None


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
