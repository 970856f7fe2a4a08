"""Numeric arrays from MATLAB v5 .mat files (the format of LSP's joints.mat).

A reader of the few dozen lines LSP needs, rather than SciPy as a runtime dependency
(~40 MB for one function). Numeric, real, full matrices only; zlib-compressed elements
are supported; anything else in the file (cells, structs, strings) is passed over.
Tests check it against scipy.io.loadmat.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from pathlib import Path

import numpy as np

from poser.errors import PoserError

# MAT v5 data types (miXXX) -> numpy dtypes (byte order added by the reader).
_MI = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15
# Numeric array classes (mxDOUBLE_CLASS .. mxUINT64_CLASS) -> numpy dtype. MATLAB may
# store a double array's values in a smaller type; the class says what they are.
# A compressed element inflates to at most this: LSP's largest joints.mat is 3.4 MB, and a
# 2 MB file of zeros could otherwise ask for gigabytes.
MAX_INFLATED = 256 << 20
_CLASS = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4",
          14: "i8", 15: "u8"}


def read_mat(path: Path) -> dict[str, np.ndarray]:
    """All numeric arrays in a v5 MAT file, by variable name."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise PoserError(f"cannot read {path}: {e.strerror or e}") from None
    if len(raw) < 128 or not raw.startswith(b"MATLAB"):
        raise PoserError(f"{path} is not a MATLAB .mat file")
    if b"7.3" in raw[:20]:
        raise PoserError(f"{path} is a MATLAB v7.3 (HDF5) file; re-save it with save(..., '-v7')")
    order = {b"IM": "<", b"MI": ">"}.get(raw[126:128])
    if order is None:
        raise PoserError(f"{path}: unknown MAT-file byte order mark {raw[126:128]!r}")
    out: dict[str, np.ndarray] = {}
    try:
        for mi, body in _elements(raw, 128, order):
            if mi == _MI_COMPRESSED:
                for mi2, body2 in _elements(_inflate(body, path), 0, order):
                    _matrix(mi2, body2, order, out)
            else:
                _matrix(mi, body, order, out)
    except KeyError as e:       # an miXXX data type this reader does not know
        raise PoserError(f"{path}: unsupported or corrupt MAT file (unknown element type {e})") from None
    except (struct.error, zlib.error, ValueError, IndexError) as e:
        raise PoserError(f"{path}: corrupt MAT file ({e})") from None
    return out


def _inflate(body: bytes, path: Path) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(body, MAX_INFLATED)
    if d.unconsumed_tail:
        raise PoserError(f"{path}: a compressed element inflates past {MAX_INFLATED >> 20} MB; not a joints file "
                         "poser reads")
    return out


def _elements(buf: bytes, pos: int, order: str):
    """Yield (type, payload) for each data element from `pos` to the end of `buf`."""
    while pos + 8 <= len(buf):
        mi, nbytes = struct.unpack_from(order + "II", buf, pos)
        if mi >> 16:  # small data element: size and type packed in 4 bytes, data in the next 4
            nbytes, mi = mi >> 16, mi & 0xFFFF
            yield mi, buf[pos + 4: pos + 4 + nbytes]
            pos += 8
            continue
        start = pos + 8
        if start + nbytes > len(buf):
            raise ValueError("element runs past the end of the file")
        yield mi, buf[start: start + nbytes]
        pos = start + nbytes
        if mi != _MI_COMPRESSED:
            pos += -nbytes % 8  # padded to 8 bytes
    return


def _matrix(mi: int, body: bytes, order: str, out: dict[str, np.ndarray]) -> None:
    if mi != _MI_MATRIX or not body:
        return
    parts = list(itertools.islice(_elements(body, 0, order), 4))   # flags, dims, name, real part
    if len(parts) < 4:
        return
    flags = np.frombuffer(parts[0][1], order + _MI[parts[0][0]])
    cls, is_complex = int(flags[0]) & 0xFF, bool(int(flags[0]) & 0x0800)
    if cls not in _CLASS or is_complex:
        return
    dims = tuple(int(d) for d in np.frombuffer(parts[1][1], order + _MI[parts[1][0]]))
    name = parts[2][1].decode("ascii", "replace")
    data = np.frombuffer(parts[3][1], order + _MI[parts[3][0]])
    if data.size != int(np.prod(dims)):
        raise ValueError(f"variable {name!r} holds {data.size} values for shape {dims}")
    out[name] = data.reshape(dims, order="F").astype(_CLASS[cls])
