"""`poser fetch-coco`, `fetch-lsp` and `synth`: datasets in, prepared caches out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from poser.cli.options import (
    CacheSizeOpt,
    DataOpt,
    JsonOpt,
    SeedOpt,
    app,
    report_errors,
    write_result,
)
from poser.console import results


def _print_fetch(summary: dict, title: str) -> None:
    if summary.get("files"):
        t = Table("file", "status", title=title)
        for name, status in summary["files"].items():
            t.add_row(name, status)
        results.print(t)
    if summary.get("splits"):
        t = Table("split", "instances kept", "skipped (reason: count)", "cache")
        for split, s in summary["splits"].items():
            skipped = ", ".join(f"{k}: {v}" for k, v in s["skipped"].items()) or "none"
            state = "none (empty split)" if not s["cache"] else "up to date" if s.get("reused") else "built"
            t.add_row(split, str(s["instances"]), skipped, state)
        results.print(t)
        caches = [s["cache"] for s in summary["splits"].values() if s["cache"]]
        if caches:
            results.print(f"caches in {Path(caches[0]).parent}", soft_wrap=True)


@app.command("fetch-coco")
@report_errors
def fetch_coco(
    data: DataOpt = None,
    splits: Annotated[str, typer.Option("--splits", help="Comma-separated: train,val.")] = "train,val",
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="Mirror with the official paths below it (zips/, annotations/).")] = None,
    no_prepare: Annotated[bool, typer.Option("--no-prepare", help="Stop after extraction.")] = False,
    prepare_only: Annotated[bool, typer.Option("--prepare-only", help="Only rebuild the training cache.")] = False,
    keep_zips: Annotated[bool, typer.Option("--keep-zips", help="Keep the zips after extraction.")] = False,
    cache_size: CacheSizeOpt = 256,
    json_out: JsonOpt = None,
) -> None:
    """Download and prepare COCO 2017.

    Resumable, verified downloads; person instances prepared for training."""
    from poser.data.cache import CacheSpec
    from poser.data.fetch.sources import COCO_URL
    from poser.data.fetch.sources import fetch_coco as run

    root = data or Path("data/coco")
    summary = run(root, base_url or COCO_URL, tuple(s.strip() for s in splits.split(",") if s.strip()),
                  prepare=not no_prepare, prepare_only=prepare_only, keep_zips=keep_zips,
                  spec=CacheSpec(size=cache_size))
    if summary["nothing_to_do"]:
        results.print(f"COCO 2017 is already fetched and prepared in {root}; nothing to do.", soft_wrap=True)
    _print_fetch(summary, f"COCO 2017 in {root}")
    write_result(json_out, summary)


@app.command("fetch-lsp")
@report_errors
def fetch_lsp(
    source: Annotated[str, typer.Option("--from", help="LSP or LSP-Extended: a folder, a zip or a URL.")],
    data: DataOpt = None,
    no_prepare: Annotated[bool, typer.Option("--no-prepare", help="Import only; no training cache.")] = False,
    cache_size: CacheSizeOpt = 256,
    json_out: JsonOpt = None,
) -> None:
    """Import and prepare LSP / LSP-Extended.

    From a folder, a zip or a URL."""
    from poser.data.cache import CacheSpec
    from poser.data.fetch.sources import fetch_lsp as run

    summary = run(source, data, prepare=not no_prepare, spec=CacheSpec(size=cache_size))
    results.print(f"{summary['layout'].upper()}: {summary['images']} images, {summary['annotated']} annotated "
                  f"-> {summary['dest']} ({summary['imported']})", soft_wrap=True)
    _print_fetch(summary, "")
    write_result(json_out, summary)


@app.command("fetch-detector")
@report_errors
def fetch_detector(
    name: Annotated[str, typer.Argument(
        metavar="NAME", help="A detector of --detector (auto: this machine's default).")] = "auto",
) -> None:
    """A person detector's weights, once (online).

    Fetches a person detector's COCO weights into torch's cache, once, on a machine that is
    online (copy the file to the same place on an offline one)."""
    from poser.detect.detectors import fetch_weights

    path = fetch_weights(name)
    results.print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)", soft_wrap=True)


@app.command("fetch-blazepose")
@report_errors
def fetch_blazepose(
    source: Annotated[str | None, typer.Option(
        "--from", help="A local pose_landmark_*.tflite, npm .tgz or mediapipe .whl [default: npm pack "
        "@mediapipe/pose, else pip download mediapipe==0.10.14].")] = None,
    json_out: JsonOpt = None,
) -> None:
    """MediaPipe's pose-trained BlazePose networks.

    Fetches them (Apache-2.0) for --backbone blazepose_*
    --pretrained mediapipe, into poser's cache ($POSER_CACHE, else ~/.cache/poser)."""
    from poser.data.fetch.blazepose import fetch_blazepose as run

    found = run(source)
    table = Table("variant", "file", title="BlazePose landmark networks")
    for variant, path in found.items():
        table.add_row(variant, path)
    results.print(table)
    write_result(json_out, found)


@app.command()
@report_errors
def synth(
    out_dir: Annotated[Path, typer.Argument(
        metavar="OUT_DIR", help="Folder to create (COCO layout).")],
    images: Annotated[int, typer.Option("--images", min=2, help="Images in all (train + val).")] = 200,
    seed: SeedOpt = 0,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of images for val.")] = 0.2,
    max_people: Annotated[int, typer.Option("--max-people", min=1, help="People per image at most.")] = 2,
    clutter: Annotated[float, typer.Option(
        "--clutter", min=0.0, max=1.0, help="Background clutter and occluders: 0 none (easy) .. 1 full.")] = 1.0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUT_DIR if it exists.")] = False,
    json_out: JsonOpt = None,
) -> None:
    """Make a synthetic COCO-format dataset.

    Person keypoints, train and val splits."""
    from poser.synth.dataset import SynthConfig, generate

    cfg = SynthConfig(images=images, seed=seed, val_fraction=val_fraction, max_people=max_people, clutter=clutter)
    result = generate(out_dir, cfg, overwrite=overwrite)
    table = Table("split", "images", "persons", title=f"synthetic dataset in {out_dir}")
    for split, s in result["splits"].items():
        table.add_row(split, str(s["images"]), str(s["persons"]))
    results.print(table)
    write_result(json_out, result)
