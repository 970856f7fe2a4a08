"""The preparation step every dataset ends with: a split's training cache, built once and
reused while its source file is unchanged."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from poser.data.cache import CACHE_VERSION, CacheSpec, build_cache, cache_dir
from poser.data.datasets import open_dataset, source_file


def prepare_split(root: Path, split: str, spec: CacheSpec, force: bool = False,
                  cache_root: Path | None = None) -> dict:
    """Build (or reuse) the training cache of one split (under `cache_root` if given, see
    `cache_dir`); returns its counts."""
    src = source_file(root, split)
    st = src.stat()
    source = {"file": src.name, "split": split, "bytes": st.st_size, "mtime": int(st.st_mtime)}
    out = cache_dir(root, split, spec, cache_root)
    if not force and (out / "meta.json").is_file():
        meta = json.loads((out / "meta.json").read_text())
        if (meta.get("version") == CACHE_VERSION and meta.get("source") == source
                and all(meta.get(k) == v for k, v in asdict(spec).items())):
            return {"instances": meta["instances"], "skipped": meta["skipped"], "cache": str(out), "reused": True}
    inst = open_dataset(root, split)
    if len(inst) == 0:  # e.g. a small LSPET copy with no image in the held-out range
        return {"instances": 0, "skipped": dict(inst.skipped), "cache": None, "reused": False}
    counts = build_cache(inst, out, spec, source=source)
    return {**counts, "cache": str(out), "reused": False}
