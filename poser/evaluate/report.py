"""What `poser eval` shows and writes beside its numbers: tables, the PDJ curves, per-joint
bars and a grid of examples."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from rich.table import Table

from poser import geometry as g
from poser.data.cache import Cache
from poser.evaluate.metrics import joint_errors
from poser.files import atomic_path
from poser.imageio import decode_rgb
from poser.inference.draw import draw_pose, label
from poser.skeletons import Skeleton


def plot_pdj(pdjs: list[dict], names: list[str], path: Path) -> None:
    """PDJ curves (detection rate vs normalised distance), one per entry, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    for p, name in zip(pdjs, names, strict=True):
        ax.plot(p["fractions"], p["curve"], label=f"{name} (PDJ@0.2 {p['at_0.2']:.3f})", lw=2)
    ax.set(xlabel="normalised distance to ground truth (x torso diameter)", ylabel="detection rate",
           xlim=(0, 0.5), ylim=(0, 1), title="PDJ")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _save_fig(fig, path)


def plot_per_joint(p: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, vals = list(p["per_joint"]), [p["per_joint"][k] for k in p["per_joint"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(names)), 4.5), dpi=110)
    ax.bar(range(len(names)), np.nan_to_num(vals), color="#3b7dd8")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set(ylim=(0, 1), ylabel="PDJ@0.2", title=f"PDJ@0.2 per joint (all: {p['at_0.2']:.3f})")
    ax.grid(axis="y", alpha=0.3)
    _save_fig(fig, path)


def _save_fig(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def example_grid(cache: Cache, pred: np.ndarray, gt: np.ndarray, sk: Skeleton, path: Path, n: int = 4) -> None:
    """The n best and n worst instances (mean normalised joint error): ground truth in
    white, prediction in side colours, on the prepared crops."""
    err, counted = joint_errors(pred, gt, sk)
    e = np.where(counted, np.nan_to_num(err, nan=9.0), 0.0)          # a missing prediction: far off
    k = counted.sum(1)
    score = np.where(k > 0, e.sum(1) / np.maximum(k, 1), np.nan)
    order = np.argsort(np.where(np.isnan(score), np.inf, score))
    valid = order[: int(np.isfinite(score).sum())]
    picks = [("best", i) for i in valid[:n]] + [("worst", i) for i in valid[::-1][:n]]
    tiles = []
    for tag, i in picks:
        img = cv2.cvtColor(decode_rgb(cache.encoded(i)), cv2.COLOR_RGB2BGR)
        m = cache.matrix[i]
        gt_c = g.transform_points(m, gt[i, :, :2])
        draw_pose(img, np.where(gt[i, :, 2:] > 0, gt_c, np.nan), sk, width=1, colour=(255, 255, 255))
        draw_pose(img, g.transform_points(m, pred[i]), sk, width=2)
        label(img, f"{tag}: err {score[i]:.2f}")
        tiles.append(img)
    if not tiles:
        return
    while len(tiles) % n:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[r: r + n]) for r in range(0, len(tiles), n)])
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", grid)
        tmp.write_bytes(buf.tobytes())


def report_tables(report: dict) -> list[Table]:
    c = report["counted"]
    pc, pd = report["pcp"], report["pdj"]
    head = (f"{report['data']} [{report['split']}]: {c['images']} images, {c['instances']} persons, "
            f"{c['joints']} joints, {c['limbs']} limbs counted; {report['protocol']}")
    t1 = Table("metric", "value", title=head)
    t1.add_row(f"PCP@{pc['threshold']} arms+legs", f"{pc['mean']:.3f}")
    for kind, v in pc["per_kind"].items():
        t1.add_row(f"  PCP {kind}", f"{v:.3f}")
    t1.add_row("PDJ@0.2 all joints", f"{pd['at_0.2']:.3f}")
    t1.add_row("PDJ@0.1 all joints", f"{pd['at_0.1']:.3f}")
    for grp, v in pd["per_group"].items():
        t1.add_row(f"  PDJ@0.2 {grp}", f"{v:.3f}")
    if c["instances_without_torso"]:
        t1.add_row("persons without a torso diagonal (not in PDJ)", str(c["instances_without_torso"]))
    tables = [t1]
    if "scores" in report:
        sr = report["scores"]
        t = Table("joint score", "joints", "right (PDJ@0.2)",
                  title=f"joint scores: right at least half the time from {sr['min_score']} (a --min-score)")
        for r in sr["bins"]:
            t.add_row(f"{r['from']:.2f}-{r['to']:.2f}", str(r["joints"]), f"{r['right']:.2f}")
        tables.append(t)
    if "per_stage" in report:
        t = Table("stage", f"PCP@{pc['threshold']}", "PDJ@0.05", "PDJ@0.1", "PDJ@0.2",
                  title="the cascade, stage by stage")
        for r in report["per_stage"]:
            curve = dict(zip(r["pdj"]["fractions"], r["pdj"]["curve"], strict=True))
            t.add_row(str(r["stage"]), f"{r['pcp']:.3f}", f"{curve[0.05]:.3f}", f"{r['pdj']['at_0.1']:.3f}",
                      f"{r['pdj']['at_0.2']:.3f}")
        tables.append(t)
    for key, title in (("coco_gt_boxes", "ground-truth boxes"), ("coco_detected_boxes", "detected boxes")):
        if key in report:
            a = report[key]
            t = Table(*[k for k in a if k != "images"], title=f"COCO keypoint AP/AR, {title} ({a['images']} images)")
            t.add_row(*[f"{v:.3f}" for k, v in a.items() if k != "images"])
            tables.append(t)
    return tables
