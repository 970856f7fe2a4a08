"""What annotate reads and where it writes: inputs expanded into sources (folders recursively,
annotate's own outputs skipped), output names that never replace an input or a stranger's file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from poser.annotate.config import AnnotateConfig
from poser.console import log
from poser.files import IMAGE_EXT, VIDEO_EXT, guard


@dataclass
class Source:
    path: Path
    kind: str                           # "image" or "video"
    rel: Path                           # output name, relative to the output folder


def collect(inputs: list[str], out_dir: Path | None = None) -> tuple[list[Source], list[dict]]:
    """Expand files and folders (recursively, sorted) into sources; problems as failures.
    A folder's files are named below the folder's own name ('.' and '..' by the folders they
    are); `out_dir` and earlier annotate outputs inside an input folder are not inputs."""
    sources, failed = [], []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files = media_files(p, out_dir)
            if not files:
                failed.append({"source": str(p), "error": "folder has no images or videos"})
            for f in files:
                sources.append(_source(f, Path(p.resolve().name or "root") / f.relative_to(p)))
        elif p.is_file():
            sources.append(_source(p, Path(p.name)))
        else:
            failed.append({"source": str(p), "error": "no such file or folder"})
    seen: dict[Path, int] = {}
    for s in sources:                   # two inputs with the same name must not overwrite each other
        n = seen.get(s.rel, 0)
        seen[s.rel] = n + 1
        if n:
            s.rel = s.rel.with_name(f"{s.rel.stem}_{n}{s.rel.suffix}")
    return sources, failed


def media_files(folder: Path, out_dir: Path | None) -> list[Path]:
    """Images and videos below `folder`, sorted, skipping `out_dir` and any folder holding an
    annotate run's keypoints.json (annotating `.` twice must not annotate the first run's output)."""
    skip = out_dir.resolve() if out_dir is not None else None
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        if here.resolve() == skip or annotate_output(here):
            dirnames[:] = []
            continue
        dirnames.sort()
        found += [here / f for f in filenames if Path(f).suffix.lower() in IMAGE_EXT | VIDEO_EXT]
    return sorted(found)


def annotate_output(folder: Path) -> bool:
    try:
        with open(folder / "keypoints.json", "rb") as f:
            return b'"poser-keypoints/' in f.read(64)
    except OSError:
        return False


def _source(path: Path, rel: Path) -> Source:
    kind = "video" if path.suffix.lower() in VIDEO_EXT else "image"
    return Source(path, kind, rel.with_suffix(".mp4") if kind == "video" else rel)


def check_outputs(cfg: AnnotateConfig, out_dir: Path | None) -> None:
    """Before any work: the files written at the end must be writable as files (a folder in the
    way would lose the whole run's results after all the work). The command line's options are
    checked by `files.guard` already; keypoints.json inside `out`, and Python callers, here."""
    files = [out_dir / "keypoints.json"] if out_dir is not None else []
    guard([], files + ([Path(cfg.save_boxes)] if cfg.save_boxes else []),
          folder_outputs=[out_dir] if out_dir is not None else [])


def keep_inputs(sources: list[Source], out_dir: Path, earlier: dict) -> None:
    """An output never replaces an input nor a file poser did not write: a source whose output
    path is an input's (`--out` is the inputs' own folder) or another existing file that no
    earlier run into `out_dir` wrote (its keypoints.json lists what it wrote) is written beside
    it as `<name>.annotated<ext>` (`_2`, ... if that is taken too), and said once."""
    inputs = {s.path.resolve() for s in sources}
    ours = written_before(out_dir, earlier)
    taken = {(out_dir / s.rel).resolve() for s in sources}
    moved = []
    for s in sources:
        dst = (out_dir / s.rel).resolve()
        if dst in inputs or (dst.exists() and dst not in ours):
            base, n = s.rel.with_name(f"{s.rel.stem}.annotated{s.rel.suffix}"), 1
            s.rel = base
            while (out_dir / s.rel).resolve() in taken or ((out_dir / s.rel).exists()
                                                           and (out_dir / s.rel).resolve() not in ours):
                n += 1
                s.rel = base.with_name(f"{base.stem}_{n}{base.suffix}")
            taken.add((out_dir / s.rel).resolve())
            moved.append(s)
    if moved:
        log.warning(f"--out holds the inputs or other files: {len(moved)} annotated cop"
                    f"{'y' if len(moved) == 1 else 'ies'} written beside them as <name>.annotated<ext> (e.g. "
                    f"{moved[0].rel}); no input and no file poser did not write is replaced")


def earlier_run(out_dir: Path) -> dict:
    """The keypoints.json an earlier annotate run left in `out_dir`, read once before this run
    writes anything ({} when there is none or it does not parse)."""
    try:
        doc = json.loads((out_dir / "keypoints.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def earlier_items(earlier: dict) -> list[dict]:
    items = earlier.get("items")
    return [r for r in items if isinstance(r, dict)] if isinstance(items, list) else []


def written_before(out_dir: Path, earlier: dict) -> set[Path]:
    """The annotated copies the earlier run wrote, as its keypoints.json lists them."""
    return {(out_dir / r["output"]).resolve() for r in earlier_items(earlier) if isinstance(r.get("output"), str)}
