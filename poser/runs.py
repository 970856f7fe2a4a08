"""Run folders: `runs/<command>/<name>N/`, auto-numbered, holding config.json, metrics.jsonl,
weights and state. Only rank 0 writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from poser.console import log
from poser.files import strict_json, write_json


def new_run_dir(root: Path, name: str | None = None) -> Path:
    """A new folder under `root` (train, eval and annotate all make theirs here): `name` as
    given if free, else `<name>-2`, `<name>-3`, ... (said in a message); without a name the
    next of exp1, exp2, ..."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if name:
        path, n = root / name, 1
        while path.exists():
            n += 1
            path = root / f"{name}-{n}"
        if n > 1:
            log.warning(f"{root / name} exists: this run goes to {path}")
    else:
        taken = [int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"exp(\d+)", p.name))]
        path = root / f"exp{max(taken, default=0) + 1}"
    path.mkdir()
    return path


def check_writable(path: Path) -> Path:
    """Fail now, with the path named, if `path` (a folder) cannot take files: before a long
    run, not after it."""
    import tempfile

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".poser-write-check-"):
        pass
    return path


def append_jsonl(path: Path, record: dict) -> None:
    """One strict-JSON line (non-finite numbers as null)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(strict_json(record), allow_nan=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def save_config(run: Path, config: dict) -> None:
    write_json(run / "config.json", config)
