"""Where datasets come from: COCO 2017 downloads, LSP / LSP-Extended imports, and the
preparation step (training cache) both end with."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from poser.data.cache import CacheSpec
from poser.data.fetch.download import (
    NoSpace,
    RemoteFile,
    check_disk_space,
    check_url,
    download,
    download_all,
    extract_zip,
    extracted,
    remote_size,
)
from poser.data.lsp import detect_layout
from poser.data.matfile import read_mat
from poser.data.prepare import prepare_split
from poser.errors import PoserError
from poser.files import atomic_dir, check_replaceable

COCO_URL = "http://images.cocodataset.org"
# Official sizes; MD5s as used by widely used download scripts (COCO publishes none).
COCO_FILES = {
    "annotations": ("annotations/annotations_trainval2017.zip", 252_907_541, "f4bbac642086de4f52a3fdda2de5fa2c"),
    "train": ("zips/train2017.zip", 19_336_861_798, "cced6f7f71b7629ddf16f17bbcfab6b2"),
    "val": ("zips/val2017.zip", 815_585_330, "442b8da7639aecaf257c1dceb8ba8c80"),
}
COCO_SPLITS = ("train", "val")




def extract_download(zip_path: Path, root: Path) -> list[str]:
    """Extract a zip poser downloaded. Refused (unsafe or corrupt), it is deleted: ours, and
    useless, so the next run fetches it anew; a good zip on a full disk (NoSpace) is kept."""
    try:
        return extract_zip(zip_path, root)
    except NoSpace:
        raise
    except PoserError as e:
        zip_path.unlink(missing_ok=True)
        raise PoserError(f"{e}; the download was deleted, run again to fetch it anew") from None


def fetch_coco(
    root: Path, base_url: str = COCO_URL, splits: tuple[str, ...] = COCO_SPLITS, prepare: bool = True,
    prepare_only: bool = False, keep_zips: bool = False, spec: CacheSpec = CacheSpec(),
    backoff: float = 1.0,
) -> dict:
    """Download, verify, extract and prepare COCO 2017 person keypoints under `root`."""
    root = Path(root)
    for s in splits:
        if s not in COCO_SPLITS:
            raise PoserError(f"unknown COCO split {s!r} (use train, val)")
    check_url(base_url, "--base-url")
    official = base_url.rstrip("/") == COCO_URL
    summary: dict = {"root": str(root), "files": {}, "splits": {}}
    if not prepare_only:
        wanted = [COCO_FILES["annotations"]] + [COCO_FILES[s] for s in splits]
        files = [RemoteFile(f"{base_url.rstrip('/')}/{path}", root / ".downloads" / Path(path).name,
                            size, md5) for path, size, md5 in wanted]
        todo = [f for f in files if not extracted(root, f.dest.name)]
        for f in files:
            if f not in todo:
                summary["files"][f.dest.name] = "already extracted"
        if todo:
            sizes = {f.dest.name: (f.size if official else remote_size(f.url)) or f.size or 0 for f in todo}
            need = 0
            for f in todo:
                have = f.dest.stat().st_size if f.dest.exists() else 0
                part = f.dest.with_name(f.dest.name + ".part")
                have += part.stat().st_size if part.exists() else 0
                need += max(0, sizes[f.dest.name] - have) + sizes[f.dest.name]  # download + extract
            check_disk_space(root, need)
            summary["files"].update(download_all(todo, backoff=backoff))
            for f in todo:
                extract_download(f.dest, root)
                if not keep_zips:
                    f.dest.unlink(missing_ok=True)
    if prepare or prepare_only:
        for s in splits:
            summary["splits"][s] = prepare_split(root, s, spec, force=prepare_only)
    summary["nothing_to_do"] = (
        all(v == "already extracted" for v in summary["files"].values())
        and all(v.get("reused") for v in summary["splits"].values())
    )
    return summary


# What an LSP import folder holds: what poser writes there (folders of earlier versions lack the marker).
LSP_NAMES = ("joints.mat", "images", "README.txt", "README.md", "cache", ".downloads")


def fetch_lsp(
    source: str, dest: Path | None = None, data_root: Path = Path("data"), prepare: bool = True,
    spec: CacheSpec = CacheSpec(), backoff: float = 1.0,
) -> dict:
    """Import LSP or LSP-Extended from a folder, a zip or a URL, then prepare its caches.

    The destination defaults to `data/lsp` or `data/lspet` by the layout of joints.mat; with
    `dest` given, temporary files and downloads go beside it, never into ./data.
    """
    if dest is not None:
        dest = Path(dest).resolve()
        check_replaceable(dest, LSP_NAMES)     # before any download: a folder of the user's is refused
        data_root = dest.parent
    summary: dict = {"source": source, "splits": {}}
    with tempfile.TemporaryDirectory(prefix=".poser-import-", dir=_mkdir(data_root)) as tmp:
        tmp = Path(tmp)
        if source.startswith(("http://", "https://")):
            name = Path(source.split("?")[0]).name or "lsp.zip"
            # keyed by the whole URL: another address's file of the same name is another file
            zpath = data_root / ".downloads" / f"{hashlib.sha256(source.encode()).hexdigest()[:12]}-{name}"
            summary["download"] = download(RemoteFile(source, zpath), backoff=backoff)
            src_path = zpath
        else:
            src_path = Path(source)
            if not src_path.exists():
                raise PoserError(f"`from_run` {source}: no such file or folder")
        if src_path.is_file():
            if "download" in summary:
                extract_download(src_path, tmp / "x")
            else:
                extract_zip(src_path, tmp / "x")      # the user's own zip: never deleted
            folder = _find_lsp_folder(tmp / "x")
        else:
            folder = _find_lsp_folder(src_path)
        joints = read_mat(folder / "joints.mat").get("joints")
        if joints is None:
            raise PoserError(f"{folder / 'joints.mat'}: no numeric variable 'joints'")
        layout = detect_layout(joints, folder / "joints.mat")
        dest = Path(dest) if dest else data_root / layout
        images = sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not images:
            raise PoserError(f"{folder / 'images'}: no images")
        summary.update(layout=layout, dest=str(dest), images=len(images), annotated=int(joints.shape[2]))
        if _same_import(folder, dest, len(images)):
            summary["imported"] = "already present"
        else:
            with atomic_dir(dest, overwrite=True, known=LSP_NAMES) as new:
                shutil.copy2(folder / "joints.mat", new / "joints.mat")
                (new / "images").mkdir()
                for p in images:
                    _link_or_copy(p, new / "images" / p.name)
                for extra in ("README.txt", "README.md"):
                    if (folder / extra).is_file():
                        shutil.copy2(folder / extra, new / extra)
            summary["imported"] = "imported"
    if prepare:
        for split in ("train", "val"):
            summary["splits"][split] = prepare_split(dest, split, spec)
    return summary


def _mkdir(p: Path) -> Path:
    Path(p).mkdir(parents=True, exist_ok=True)
    return Path(p)


def _find_lsp_folder(top: Path) -> Path:
    """The folder holding joints.mat and images/ (at the top or a few levels down)."""
    for depth in range(4):
        for cand in sorted(top.glob("/".join(["*"] * depth) + ("/" if depth else "") + "joints.mat")):
            if (cand.parent / "images").is_dir():
                return cand.parent
    raise PoserError(f"{top}: no joints.mat with an images/ folder beside it (not LSP or LSP-Extended)")


def _same_import(src: Path, dest: Path, n_images: int) -> bool:
    j = dest / "joints.mat"
    if not j.is_file() or j.read_bytes() != (src / "joints.mat").read_bytes():
        return False
    return sum(1 for _ in (dest / "images").iterdir()) == n_images


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard links cost no space on the same file system; otherwise copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
