"""Run folders: `runs/<command>/<name>N/`, auto-numbered, holding config.json, metrics.jsonl,
weights and state. Only rank 0 writes."""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from pathlib import Path

from poser.console import log
from poser.errors import PoserError
from poser.files import strict_json, write_bytes, write_json


def new_run_dir(root: Path, name: str | None = None) -> Path:
    """A new folder under `root` (train, eval and annotate all make theirs here): `name` as
    given if free, else `<name>-2`, `<name>-3`, ... (said in a message); without a name the
    next of exp1, exp2, ...; a name is one folder name (no `/`, `..` or absolute path): a run
    never lands outside `root`."""
    root = Path(root)
    check_run_name(name)
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


def check_run_name(name: str | None) -> None:
    """A run name is one folder name: `../../x` or `/abs` would put the run outside runs/."""
    if name is not None and (name in ("", ".", "..") or any(c in name for c in "/\\\0")):
        raise PoserError(f"`name` {name!r}: a run name is one folder name (no '/', '..' or absolute path); "
                         "use `out` for another place")


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
        f.write(_jsonl_line(record))


def _jsonl_line(record: dict) -> str:
    return json.dumps(strict_json(record), allow_nan=False) + "\n"


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; a last line cut short (a process killed while
    appending) is left out."""
    if not Path(path).is_file():
        return []
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise PoserError(f"{path}: line {i + 1} is not JSON") from None
    return rows


def save_config(run: Path, config: dict) -> None:
    write_json(run / "config.json", config)


@contextlib.contextmanager
def run_lock(run: Path):
    """Hold `run`'s lock file while a process trains into it: a second `train --resume` of
    the same run is refused in one line instead of both writing the same epochs."""
    run.mkdir(parents=True, exist_ok=True)
    f = open(run / ".lock", "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PoserError(f"{run} is in use: another poser train is writing to it (wait for it, or "
                             "stop it first)") from None
        yield
    finally:
        f.close()


def tidy_run(run: Path, epochs_done: int) -> None:
    """Before a resume: remove what a process killed mid-save left (`.*.part` files) and the
    metrics lines of epochs the saved state does not hold (they are trained again)."""
    for tmp in run.glob(".*.part"):
        tmp.unlink(missing_ok=True)
    path = run / "metrics.jsonl"
    lines = [x for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
    keep = [r for r in read_jsonl(path) if r.get("epoch", 0) <= epochs_done]
    if len(keep) != len(lines):
        write_bytes(path, "".join(_jsonl_line(r) for r in keep).encode())
