"""Downloads and zip extraction shared by fetch-coco and fetch-lsp.

Downloads are resumable (HTTP Range on a `.part` file), retried with exponential backoff on
connection errors, timeouts, 429 and 5xx, verified (size from the server and, when the
file is the official one, MD5) and renamed into place only when complete: a file without
`.part` is always whole. Extraction rejects unsafe entries (absolute paths, `..`, links)
before writing anything, extracts into a temporary folder, and marks a zip as extracted
only after everything is in place.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import stat
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from poser.console import progress
from poser.errors import PoserError
from poser.version import __version__

CHUNK = 1 << 20
MARKERS = ".poser"  # per-dataset folder of completion markers


@dataclass
class RemoteFile:
    url: str
    dest: Path
    size: int | None = None      # the official size, when known
    md5: str | None = None       # checked when the served file has the official size


def _progress() -> Progress:
    return progress("bytes", (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()))


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def check_url(url: str, what: str) -> None:
    """An http(s) address with a host, or a one-line error before anything is fetched (a
    file:// or mistyped address would otherwise be retried for a minute)."""
    u = urllib.parse.urlparse(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise PoserError(f"{what} {url}: not an http:// or https:// address")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) only: urllib would follow one to ftp:// and then report
    whatever the FTP attempt gives (a "connection refused" that names no redirect)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlparse(newurl).scheme not in ("http", "https"):
            raise PoserError(f"{req.full_url}: redirected to {newurl}; poser follows http:// and https:// only")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _open(req: urllib.request.Request, timeout: float):
    return _OPENER.open(req, timeout=timeout)


def remote_size(url: str, timeout: float = 30) -> int | None:
    """Content-Length from a HEAD request, or None if the server does not say."""
    try:
        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": f"poser/{__version__}"})
        with _open(req, timeout) as r:
            n = r.headers.get("Content-Length")
            return int(n) if n is not None else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def download(
    f: RemoteFile, bar: Progress | None = None, retries: int = 6, backoff: float = 1.0,
    timeout: float = 60.0, stop: threading.Event | None = None,
) -> str:
    """Fetch `f.url` to `f.dest`; returns 'present', 'downloaded' or 'resumed'. Setting `stop`
    (Ctrl-C in download_all) ends it within a chunk, the `.part` kept for a resume."""
    if f.dest.exists():
        return "present"
    check_url(f.url, "download")
    f.dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part(f.dest)
    resumed = part.exists() and part.stat().st_size > 0
    task = bar.add_task(f.dest.name, total=f.size) if bar else None
    attempt, last_error = 0, ""
    while True:
        try:
            total = _fetch_once(f.url, part, bar, task, timeout, stop)
            break
        except _Retryable as e:
            last_error = str(e)
        except urllib.error.HTTPError as e:
            if e.code not in (408, 429) and e.code < 500:
                raise PoserError(f"{f.url}: HTTP {e.code} {e.reason}") from None
            last_error = f"HTTP {e.code}"
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ConnectionRefusedError):      # nobody listens there: retrying cannot help
                raise PoserError(f"{f.url}: connection refused (no server at that address and port)") from None
            last_error = str(reason) or type(e).__name__
        attempt += 1
        if attempt > retries:
            raise PoserError(f"{f.url}: giving up after {retries} retries ({last_error}); "
                             f"run again to resume from {part.stat().st_size if part.exists() else 0} bytes")
        if (stop or threading.Event()).wait(min(30.0, backoff * 2 ** (attempt - 1))):
            raise KeyboardInterrupt
    _verify(f, part, total)
    os.replace(part, f.dest)
    return "resumed" if resumed else "downloaded"


class _Retryable(Exception):
    pass


def _fetch_once(url: str, part: Path, bar: Progress | None, task, timeout: float,
                stop: threading.Event | None = None) -> int:
    """One request: continue `part` from its current size. Returns the full file size."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"poser/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        resp = _open(urllib.request.Request(url, headers=headers), timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416:  # nothing left to send: the part may already be whole
            m = re.match(r"bytes \*/(\d+)", e.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == start:
                return start
            part.unlink(missing_ok=True)
            raise _Retryable("server refused the resume range; restarting") from None
        raise
    with resp:
        if resp.status == 206:
            m = re.match(r"bytes (\d+)-(\d+)/(\d+)", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != start:
                part.unlink(missing_ok=True)
                raise _Retryable("server sent an unexpected range; restarting")
            total, mode = int(m.group(3)), "ab"
        else:  # 200: the server ignored Range (or there was none): start over
            n = resp.headers.get("Content-Length")
            total, mode, start = (int(n) if n else -1), "wb", 0
        if bar is not None:
            bar.update(task, total=total if total >= 0 else None, completed=start)
        with open(part, mode) as out:
            while True:
                try:
                    chunk = resp.read1(CHUNK)     # what has arrived: a stop is seen within a read
                except http.client.IncompleteRead as e:
                    out.write(e.partial)
                    raise _Retryable("connection closed early") from None
                if not chunk:
                    break
                out.write(chunk)
                if stop is not None and stop.is_set():      # Ctrl-C: what came is kept in .part
                    raise KeyboardInterrupt
                if bar is not None:
                    bar.advance(task, len(chunk))
    got = part.stat().st_size
    if total >= 0 and got != total:
        raise _Retryable(f"got {got} of {total} bytes")
    return got


def _verify(f: RemoteFile, part: Path, total: int) -> None:
    if f.md5 and f.size == total:
        h = hashlib.md5()
        with open(part, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK * 8), b""):
                h.update(chunk)
        if h.hexdigest() != f.md5:
            part.unlink()
            raise PoserError(f"{f.dest.name}: MD5 mismatch (got {h.hexdigest()}, expected {f.md5}); "
                             "the download was deleted, run again")


def download_all(files: list[RemoteFile], workers: int = 3, backoff: float = 1.0) -> dict[str, str]:
    """Download several files in parallel, each with its own progress bar. Every file is
    attempted; failures are reported together after the others finish."""
    status: dict[str, str] = {}
    errors: list[str] = []
    stop = threading.Event()
    with _progress() as bar, ThreadPoolExecutor(max(1, workers)) as ex:
        futures = {ex.submit(download, f, bar, backoff=backoff, stop=stop): f for f in files}
        try:
            for fut, f in futures.items():
                try:
                    status[f.dest.name] = fut.result()
                except PoserError as e:
                    errors.append(str(e))
                    status[f.dest.name] = "failed"
        except BaseException:       # Ctrl-C here: the workers stop within a chunk, not at their file's end
            stop.set()
            raise
    if errors:
        raise PoserError("; ".join(errors))
    return status


def check_disk_space(folder: Path, need: int) -> None:
    """Stop before a download or extraction that cannot fit."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise PoserError(f"not enough disk space in {folder}: need {need / 1e9:.1f} GB, "
                         f"{free / 1e9:.1f} GB free")


def _unsafe(name: str) -> bool:
    p = name.replace("\\", "/")
    return p.startswith("/") or bool(re.match(r"^[A-Za-z]:", p)) or ".." in PurePosixPath(p).parts


class NoSpace(PoserError):
    """The disk cannot hold what a zip unpacks to: the zip itself is good (keep it)."""


def extracted(root: Path, zip_name: str) -> bool:
    return (root / MARKERS / f"extracted-{zip_name}").exists()


def _check_entries(zip_path: Path, infos: list[zipfile.ZipInfo], root: Path) -> int:
    """Refuse, before a byte is written, an unsafe entry (absolute, '..', a link) or entries
    that unpack to more than `root`'s disk holds (a zip bomb, or a full disk); their total size."""
    for info in infos:
        if _unsafe(info.filename):
            raise PoserError(f"{zip_path.name}: unsafe entry {info.filename!r} (absolute or '..' path); "
                             "nothing was extracted")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise PoserError(f"{zip_path.name}: entry {info.filename!r} is a symbolic link; nothing was extracted")
    total = sum(i.file_size for i in infos)        # zipfile never writes more than these sizes
    free = shutil.disk_usage(next(p for p in (root, *root.parents) if p.exists())).free
    if total > free:
        raise NoSpace(f"{zip_path.name}: its entries unpack to {total / 1e9:.2f} GB and {root} has "
                      f"{free / 1e9:.2f} GB free; nothing was extracted, the download is kept")
    return total


def extract_zip(zip_path: Path, root: Path) -> list[str]:
    """Safely extract `zip_path` into `root`; returns its top-level names.

    A zip already extracted (marker present) is skipped. Unsafe or corrupt zips raise a
    PoserError naming the file, and nothing is marked complete.
    """
    zip_path, root = Path(zip_path), Path(root)
    marker = root / MARKERS / f"extracted-{zip_path.name}"
    if marker.exists():
        return marker.read_text().split("\n")
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise PoserError(f"{zip_path.name}: not a readable zip ({e})") from None
    with zf:
        infos = zf.infolist()
        total = _check_entries(zip_path, infos, root)
        tmp = root / MARKERS / f"extract-{zip_path.name}.part"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            with _progress() as bar:
                task = bar.add_task(f"extract {zip_path.name}", total=total)
                for info in infos:
                    target = tmp / info.filename
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(target, "wb") as dst:  # CRC checked on read
                        shutil.copyfileobj(src, dst, CHUNK)
                    bar.advance(task, info.file_size)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno == errno.ENOSPC:
                raise NoSpace(f"{zip_path.name}: no space left on the disk of {root} while extracting; nothing "
                              "was extracted, the download is kept") from None
            raise PoserError(f"{zip_path.name}: extracting failed ({e}); nothing was marked extracted") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise PoserError(f"{zip_path.name}: corrupt zip ({e}); nothing was marked extracted") from None
    # "./" (an entry some zip tools write for the archive's own folder) has no parts: not a top.
    tops = sorted({parts[0] for i in infos if (parts := PurePosixPath(i.filename.replace("\\", "/")).parts)})
    clash = [c for name in tops for c in _clashes(tmp / name, root / name)]
    if clash:               # checked whole before anything moves: a file never replaces a folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise PoserError(f"{zip_path.name}: entry {clash[0].relative_to(root)} would replace a folder (or a "
                         f"folder a file) of the same name in {root}; nothing was extracted")
    for name in tops:
        _merge(tmp / name, root / name)
    shutil.rmtree(tmp, ignore_errors=True)
    marker.write_text("\n".join(tops))
    return tops


def _clashes(src: Path, dst: Path) -> list[Path]:
    """Paths under `dst` where `src`'s tree has a file and `dst`'s a folder, or the reverse."""
    if not dst.exists():
        return []
    if src.is_dir() and dst.is_dir():
        return [c for child in src.iterdir() for c in _clashes(child, dst / child.name)]
    return [dst] if src.is_dir() != dst.is_dir() else []


def _merge(src: Path, dst: Path) -> None:
    """Move `src` to `dst`, merging into an existing folder (two zips may share one, e.g.
    `annotations/`) and replacing files an interrupted earlier run left behind."""
    if src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _merge(child, dst / child.name)
    else:
        os.replace(src, dst)    # a file over a file an interrupted run left (folders: _clashes refused)
