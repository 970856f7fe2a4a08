"""Run folders: `runs/<command>/<name>N/`, auto-numbered, holding config.json, metrics.jsonl,
weights and state. Only rank 0 writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from poser.files import strict_json, write_json


def new_run_dir(root: Path, name: str | None = None) -> Path:
    """A new folder under `root`: `name` as given if free, else the next `<name>N`
    (default name 'exp': exp1, exp2, ...)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = name or "exp"
    if name and not (root / name).exists():
        path = root / name
    else:
        taken = [int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(re.escape(base) + r"(\d+)", p.name))]
        path = root / f"{base}{max(taken, default=0) + 1}"
    path.mkdir()
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
