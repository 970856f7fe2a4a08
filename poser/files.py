"""Atomic file writes: a reader never sees a half-written file, even after a crash."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from poser.errors import PoserError

# The files annotate reads from a folder, by suffix (lower case).
IMAGE_EXT = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXT = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"})
MEDIA_SUFFIXES = IMAGE_EXT | VIDEO_EXT

_INPUTS: set[tuple[int, int]] = set()     # (device, inode) of the running command's input files


def _key(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def guard(inputs: list[Path], outputs: list[Path], read_from_folders: frozenset[str] = frozenset(),
          folder_outputs: list[Path] = ()) -> None:
    """An output never replaces an input: refuse (one line, before any work) an output path that
    is an input file (hard links and symlinks included) or an existing file inside an input
    folder with a suffix read from folders (`read_from_folders`: annotate's images and videos);
    and remember the input files, so no write of this process (`atomic_path`) replaces one
    later either. An output file (`outputs`) that is an existing folder, or an output folder
    (`folder_outputs`) that is a file, is refused too: found after the work, it would lose it."""
    for out in map(Path, outputs):
        if out.is_dir():
            raise PoserError(f"{out} is a folder: a file is written there; nothing was done (give a file name, "
                             f"e.g. {out / 'result.json'})")
    for out in map(Path, folder_outputs):
        if out.exists() and not out.is_dir():
            raise PoserError(f"{out} is a file, not a folder; nothing was done")
    files, folders = [], []
    for p in map(Path, inputs):
        (folders if p.is_dir() else files).append(p)
    _INPUTS.update(k for k in map(_key, files) if k)
    for out in map(Path, [*outputs, *folder_outputs]):
        key = _key(out)
        if key is None:
            continue
        inside = next((f for f in folders if out.suffix.lower() in read_from_folders
                       and out.resolve().is_relative_to(f.resolve())), None)
        if key in _INPUTS or inside is not None:
            what = "is an input" if inside is None else f"is a file inside the input folder {inside}"
            raise PoserError(f"{out} {what}: poser never writes over its inputs; choose another output path")


def check_not_input(path: Path) -> None:
    """Refuse to write `path` when it is one of the command's input files (`guard`)."""
    if _INPUTS and _key(path) in _INPUTS:
        raise PoserError(f"{path} is an input: poser never writes over its inputs; choose another output path")


def temp_prefix(path: Path) -> str:
    """The start of a temporary name beside `path`: hidden, recognisable, and short enough that
    a legal 255-byte name plus mkstemp's random part and a suffix stays legal."""
    stem = path.name.encode()[:80].decode(errors="ignore")
    return f".{stem}."


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds, and
    never when `path` is one of the command's inputs (`guard`)."""
    path = Path(path)
    check_not_input(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)      # mkstemp's 0600 would outlive the rename
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)          # the only way to read it is to set it: once, before any thread runs
    os.umask(mask)
    return mask


_UMASK = _umask()


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj: object, indent: int | None = 2) -> None:
    """Strict JSON, readable by every parser: NaN and infinities (no value) are written as null."""
    write_bytes(path, (json.dumps(strict_json(obj), indent=indent, allow_nan=False) + "\n").encode())


def strict_json(obj: object) -> object:
    """`obj` with every non-finite float replaced by None (JSON null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def missing_file(path: Path, what: str = "weights file") -> str:
    """Why `path` is not a file to read, in words: a folder (with the file it may mean), or nothing."""
    path = Path(path)
    if path.is_dir():
        inside = next((n for n in ("last.safetensors", "best.safetensors") if (path / n).is_file()), None)
        hint = f" (e.g. {path / inside})" if inside else ""
        return f"{path} is a folder, not a {what}{hint}"
    return f"{what} not found: {path}"


def cache_root() -> Path:
    """Where poser caches what it fetched or made from your files ($POSER_CACHE, default
    ~/.cache/poser): exports, BlazePose networks; deleting it costs only time."""
    root = os.environ.get("POSER_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "poser"
    return Path(root)


OWNED = ".poser-folder"     # in every folder poser makes whole: the only folders it ever replaces


def check_replaceable(path: Path, known: tuple[str, ...] = ()) -> None:
    """Poser replaces only a folder it made: refuse, in one line and before any work, an
    existing `path` that is a file, or a folder that is not empty, has no OWNED marker and holds
    a name outside `known` (what poser writes there; folders of earlier versions have no marker)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise PoserError(f"{path} exists and is not a folder poser made; nothing was changed (choose another)")
    names = [p.name for p in path.iterdir()]
    if OWNED in names:
        return
    other = sorted(n for n in names if n not in known and not n.startswith(".poser"))
    if other:
        more = f" and {len(other) - 3} more" if len(other) > 3 else ""
        raise PoserError(f"{path} holds files poser did not write ({', '.join(other[:3])}{more}); nothing was "
                         "changed: choose a new or empty folder")


@contextmanager
def atomic_dir(path: Path, overwrite: bool = False, known: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary folder that becomes `path` when the block succeeds.

    With `overwrite`, an existing `path` is replaced only after the new one is complete, and
    only if poser made it (`check_replaceable`, with `known` the names poser writes there).
    The new folder carries the OWNED marker.
    """
    path = Path(path).resolve()         # '.' has no name to put a sibling beside
    if overwrite:
        check_replaceable(path, known)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        (tmp / OWNED).write_text("made by poser: poser may replace this folder\n")
        os.chmod(tmp, 0o777 & ~_UMASK)      # mkdtemp's 0700 likewise
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            check_replaceable(path, known)   # again: it may have changed while the work ran
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
