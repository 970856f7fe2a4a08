"""The `poser` app and the option vocabulary every command shares (defined once here):
--data, --weights, --out, --json, --device, --seed, --threads, ... A PoserError becomes one
red line and a non-zero exit."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text
from typer.core import TyperArgument, TyperGroup

from poser.console import console, show_messages
from poser.errors import PoserError
from poser.files import MEDIA_SUFFIXES, guard
from poser.runtime.networks import PRECISIONS, RUNTIMES
from poser.threads import configure_openmp
from poser.version import __version__

# `poser --help` lists the commands in the order a newcomer meets them.
ORDER = ("demo", "annotate", "train", "eval", "export", "fetch-coco", "fetch-lsp", "fetch-detector", "fetch-blazepose",
         "synth", "bench")


class _PlainArgument(TyperArgument):
    """An argument as a user reads it: `poser export WEIGHTS OUT`, `PATH...`, not Typer's
    `{WEIGHTS}` and `PATH <list[str]>` (Python's type names)."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"

    def _rich_display_name(self) -> str:
        return self._usage_display_name()

    def display_type_rich(self, ctx) -> None:
        return None


class _Ordered(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))

    def get_command(self, ctx, name: str):
        command = super().get_command(ctx, name)
        for param in getattr(command, "params", ()):
            if type(param) is TyperArgument:
                param.__class__ = _PlainArgument
        return command


app = typer.Typer(
    name="poser",
    cls=_Ordered,
    help="DeepPose human pose estimation: fetch data, train, evaluate, annotate images and video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


# The shared option vocabulary.
DataOpt = Annotated[Path | None, typer.Option(
    "--data", help="Dataset root, as fetch-coco / fetch-lsp / synth leave it.")]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="A poser weights file (.safetensors) or cascade bundle, or a shipped model: lsp14 (the "
    "default), coco17.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Output folder.")]


def data_option(default: str):
    """--data, saying this command's default."""
    return Annotated[Path | None, typer.Option(
        "--data", show_default=False,
        help=f"Dataset root, as fetch-coco / fetch-lsp / synth leave it. [default: {default}]")]


def out_option(default: str):
    """--out, saying this command's default."""
    return Annotated[Path | None, typer.Option(
        "--out", show_default=False, help=f"Output folder. [default: {default}]")]


def _json_file(path: Path | None) -> Path | None:
    """--json is checked before the command runs, not after it: a file that cannot be created
    there is a usage error at once (a folder in its place: `files.guard`, as every output file)."""
    if path is not None:
        parent = path.parent if str(path.parent) else Path(".")
        if parent.exists() and not (parent.is_dir() and os.access(parent, os.W_OK)):
            raise typer.BadParameter(f"cannot write {path}: {parent} is not a writable folder")
    return path


JsonOpt = Annotated[Path | None, typer.Option(
    "--json", help="Also write the command's result as JSON to FILE.", callback=_json_file)]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where to run the model.")]
SeedOpt = Annotated[int, typer.Option("--seed", help=(
    "Random seed: the same seed gives the same data order, augmentation draws and initial weights "
    "(synth: the same bytes). Trained numbers can still differ in their last digits between runs: "
    "parallel float sums on the CPU depend on the thread count and timing, cuDNN's on the GPU."))]
Runtime = StrEnum("Runtime", {n: n for n in RUNTIMES})
Precision = StrEnum("Precision", {n: n for n in PRECISIONS})
RuntimeOpt = Annotated[Runtime, typer.Option(
    "--runtime", help="What runs the network: auto (torch on CUDA; on the CPU the fastest installed of openvino, "
    "onnxruntime that matches torch, else torch).")]
PrecisionOpt = Annotated[Precision, typer.Option(
    "--precision", help="CPU runtimes: auto (openvino bf16 where the CPU has it and it matches torch, else fp32), "
    "fp32, bf16 (openvino) or int8 (openvino: the model quantized from these weights, beside them, as poser "
    "export --int8 writes it).")]


# Every command's options by role, by parameter name: what it reads, and the files it writes.
# `report_errors` checks them against each other before the command runs (files.guard).
INPUT_OPTIONS = ("inputs", "weights", "boxes", "predictions", "init", "pretrained", "source", "detector_weights",
                 "calibration")
OUTPUT_OPTIONS = ("json_out", "save_boxes", "dst")      # files
OUTPUT_FOLDERS = ("out",)


def _paths(kwargs: dict) -> tuple[list[Path], list[Path], list[Path]]:
    def flat(names):
        vals = [kwargs.get(n) for n in names]
        return [Path(x) for v in vals if v for x in (v if isinstance(v, list) else [v])
                if isinstance(x, str | Path) and str(x) not in ("imagenet", "mediapipe")]
    return flat(INPUT_OPTIONS), flat(OUTPUT_OPTIONS), flat(OUTPUT_FOLDERS)


def report_errors(fn: Callable) -> Callable:
    """PoserError -> one red line on stderr and its exit code; Ctrl-C or SIGTERM -> exit 130,
    after the command's own cleanup (SIGTERM is raised as KeyboardInterrupt in the command, so
    what finished is kept and partial files are removed on both signals)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            inputs, files, folders = _paths(kwargs)
            guard(inputs, files, read_from_folders=MEDIA_SUFFIXES, folder_outputs=folders)
            with _sigterm_interrupts():
                return fn(*args, **kwargs)
        except PoserError as e:
            console.print(Text.assemble(("error: ", "bold red"), as_flags(str(e), fn)), highlight=False,
                          soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            console.print(Text("interrupted", style="bold red"))
            raise typer.Exit(130) from None
        except OSError as e:        # a folder that is not writable, an --out that is a file, a full disk
            where = f"{e.filename}: " if e.filename else ""
            console.print(Text.assemble(("error: ", "bold red"), f"{where}{e.strerror or e}"), highlight=False,
                          soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def as_flags(message: str, command: Callable) -> str:
    """The library names a parameter as `name` (what a Python caller passes); the command line
    says the command's flag for it (`from_run` -> --from), or the bare name."""
    import typing

    flags = {}
    for name, hint in typing.get_type_hints(command, include_extras=True).items():
        for meta in getattr(hint, "__metadata__", ()):
            # Annotated[..., typer.Option("--from", ...)]: typer keeps the first declaration as `default`
            given = [getattr(meta, "default", None), *(getattr(meta, "param_decls", None) or ())]
            decls = [d for d in given if isinstance(d, str) and d.startswith("--")]
            if decls:
                flags[name] = decls[0]
    return re.sub(r"`([a-z][a-z0-9_]*)`", lambda m: flags.get(m.group(1), m.group(1)), message)


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt in the main thread while a command runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def write_result(path: Path | None, result: dict) -> None:
    if path is not None:
        from poser.files import write_json

        write_json(path, result)
        console.print(f"JSON written to {path}")


def _version(value: bool) -> None:
    if value:
        print(f"poser {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """DeepPose human pose estimation: fetch data, train, evaluate, annotate images and video."""
    show_messages()         # the library logs; the command line shows it on stderr
    configure_openmp()      # before any command imports torch: brief spinning (poser/threads.py)


ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", min=1, help="CPU threads for torch [default: OMP_NUM_THREADS, else the cores free at the start].")]
StagesOpt = Annotated[int | None, typer.Option(
    "--stages", min=1, help="Run only the first N stages of a cascade [default: all].")]
CacheSizeOpt = Annotated[int, typer.Option("--cache-size", min=64, max=1024, help="Side of the prepared crops (px).")]
FlipOpt = Annotated[bool | None, typer.Option(
    "--flip/--no-flip", show_default=False, help="Flip test: average with the mirrored crop (about 1.7x "
    "the model's time; the person search mirrors only its last pass). [default: the model's own: on for "
    "the shipped models]")]
SearchOpt = Annotated[int, typer.Option(
    "--search", min=0, help="Person search without boxes: passes after the whole-image one.")]
DetectorOpt = Annotated[str | None, typer.Option(
    "--detector", help="Find people with a torchvision COCO detector: auto (the CPU's fastest, "
    "ssdlite320_mobilenet_v3_large; on a GPU fasterrcnn_mobilenet_v3_large_fpn), "
    "fasterrcnn_mobilenet_v3_large_fpn (800 px, small people), fasterrcnn_mobilenet_v3_large_320_fpn, "
    "ssdlite320_mobilenet_v3_large, fasterrcnn_resnet50_fpn_v2 (accurate, slow). Weights are fetched once "
    "into torch's cache.")]
DetectorWeightsOpt = Annotated[Path | None, typer.Option(
    "--detector-weights", help="A local state dict for --detector (.safetensors or .pth) instead of the cache.")]
MaxPeopleOpt = Annotated[int, typer.Option("--max-people", min=1, help="People per image or frame, best first "
                                           "(eval keeps 100: COCO AP ranks every detection).")]
PersonThresholdOpt = Annotated[float, typer.Option(
    "--person-threshold", "--box-threshold", min=0.0, max=1.0,
    help="Minimum person score of a detection (--boxes or --detector); annotate draws confident people only, "
    "eval keeps every detection (0: COCO AP ranks them by score, a threshold only lowers recall).")]
