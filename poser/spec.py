"""`ModelSpec`: what a weights file says about its model, typed, in one place.

A weights file's JSON metadata is a `ModelSpec.to_meta()`; `ModelSpec.from_meta()` reads it
back, including every file poser ever shipped (fields added later take the default that
matches how those files were made: no `head` means the fc head, no `cache_size` a 256 px
cache, no `decode_radius` the whole-map decode). A new field of a weights file is one new
field of `StageSpec` with that default, nothing else.

A model is one network (stage one) or a cascade: stage one and refinement stages 2..S, each
its own network with its own spec (`ModelSpec.stages`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from poser.codec import HEADS, MARGIN, MEAN, STD
from poser.errors import PoserError
from poser.skeletons import get_skeleton

MAX_INPUT = 1024        # px: a model input beyond this is a corrupt file, not a model (it would allocate GBs)


@dataclass(frozen=True)
class StageSpec:
    """One network: how to build it, what its input is, how to read its output, where it
    came from. The first group builds and runs it; the rest is provenance (reported, not used)."""

    backbone: str
    skeleton: str                       # skeletons.get_skeleton name: lsp14, coco17
    joints: tuple[str, ...]
    input_size: int                     # model input side, px
    head: str = "fc"                    # files from before the integral head existed are fc
    sigma_head: bool = False            # fc head with an RLE sigma output
    margin: float = MARGIN              # model crop = person box grown to a square x margin
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD
    stage: int = 1                      # 1, or the refinement stage 2..S this network is
    sub_image: float | None = None      # refinement stages: sub-image side, x torso diameter
    decode_radius: float | None = None  # integral head: decode within this many cells of the peak
    flip_test: bool = False             # the flip test is this model's default (measured better with it)
    cache_size: int = 256               # side of the prepared crops it was trained on
    # provenance
    loss: str | None = None
    epoch: int | None = None
    metrics: dict = field(default_factory=dict)
    trained_on: dict | None = None
    poser_version: str | None = None

    def __post_init__(self) -> None:
        _check(self)

    @classmethod
    def from_meta(cls, meta: dict, where: str = "weights") -> StageSpec:
        """From one network's metadata dict; unknown keys are ignored (a newer poser's fields)."""
        if not isinstance(meta, dict):
            raise PoserError(f"{where}: metadata is not a JSON object")
        missing = [k for k in ("backbone", "skeleton", "joints", "input_size") if k not in meta]
        if missing:
            raise PoserError(f"{where}: metadata lacks {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in meta.items() if k in known}
        for k in ("joints", "mean", "std"):
            if isinstance(kw.get(k), list):
                kw[k] = tuple(kw[k])
        try:
            return cls(**kw)
        except PoserError as e:
            raise PoserError(f"{where}: {e}") from None
        except (TypeError, ValueError) as e:
            raise PoserError(f"{where}: invalid metadata ({e})") from None

    def to_meta(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _check(s: StageSpec) -> None:
    """Values that would crash or mislead far from the file that holds them: one line here."""
    def number(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if not isinstance(s.input_size, int) or isinstance(s.input_size, bool) or not 16 <= s.input_size <= MAX_INPUT:
        raise PoserError(f"input_size {s.input_size!r} is not a model input side (16..{MAX_INPUT} px)")
    if not isinstance(s.cache_size, int) or not 16 <= s.cache_size <= 4096:
        raise PoserError(f"cache_size {s.cache_size!r} is not a crop side (16..4096 px)")
    if s.head not in HEADS:
        raise PoserError(f"unknown head {s.head!r} (known: {', '.join(HEADS)})")
    if not isinstance(s.backbone, str):
        raise PoserError(f"backbone {s.backbone!r} is not a name")
    sk = get_skeleton(s.skeleton) if isinstance(s.skeleton, str) else None
    if sk is None or tuple(s.joints) != tuple(sk.joints):
        raise PoserError(f"joints do not match the {s.skeleton!r} skeleton")
    if not (number(s.margin) and s.margin > 0):
        raise PoserError(f"margin {s.margin!r} is not a positive number")
    if not (len(s.mean) == 3 and len(s.std) == 3 and all(map(number, s.mean + s.std)) and min(s.std) > 0):
        raise PoserError("mean / std are not 3 finite numbers (std > 0)")
    if s.decode_radius is not None and not (number(s.decode_radius) and s.decode_radius > 0):
        raise PoserError(f"decode_radius {s.decode_radius!r} is not a positive number")
    if not isinstance(s.flip_test, bool):
        raise PoserError(f"flip_test {s.flip_test!r} is not true or false")
    if s.sub_image is not None and not (number(s.sub_image) and s.sub_image > 0):
        raise PoserError(f"sub_image {s.sub_image!r} is not a positive number")
    if not isinstance(s.stage, int) or s.stage < 1:
        raise PoserError(f"stage {s.stage!r} is not 1, 2, ...")


@dataclass(frozen=True)
class ModelSpec:
    """A whole weights file: stage one, then any refinement stages."""

    stages: tuple[StageSpec, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise PoserError("a model has at least one stage")
        if any(s.skeleton != self.stages[0].skeleton for s in self.stages):
            raise PoserError("the stages of a cascade predict different skeletons")

    @property
    def first(self) -> StageSpec:
        return self.stages[0]

    @property
    def skeleton(self) -> str:
        return self.first.skeleton

    @property
    def input_size(self) -> int:
        return self.first.input_size

    @property
    def cache_size(self) -> int:
        return self.first.cache_size

    def __len__(self) -> int:
        return len(self.stages)

    @classmethod
    def from_meta(cls, meta: dict, where: str = "weights") -> ModelSpec:
        """A file's metadata: one network's fields, or a cascade bundle's (`stages`: a list)."""
        if not isinstance(meta, dict):
            raise PoserError(f"{where}: metadata is not a JSON object")
        if "stages" in meta:
            if not isinstance(meta["stages"], list) or not meta["stages"]:
                raise PoserError(f"{where}: 'stages' is not a list of stage metadata")
            return cls(tuple(StageSpec.from_meta(m, f"{where} stage {i}")
                             for i, m in enumerate(meta["stages"], start=1)))
        return cls((StageSpec.from_meta(meta, where),))

    def to_meta(self) -> dict:
        """One network: its fields. A cascade: stage one's input fields at the top (quick
        reading by other tools), every stage's fields under `stages`."""
        if len(self.stages) == 1:
            return self.first.to_meta()
        top = {k: v for k, v in self.first.to_meta().items()
               if k in ("skeleton", "joints", "input_size", "margin", "mean", "std", "cache_size")}
        return top | {"stage": len(self.stages), "stages": [s.to_meta() for s in self.stages]}

    def with_test(self, decode_radius: float | None = None, flip_test: bool | None = None) -> ModelSpec:
        """The test-time settings an export records, measured on the model (None: unchanged):
        the integral head's decode radius, and whether the flip test is the model's default."""
        changes = {k: v for k, v in (("decode_radius", decode_radius), ("flip_test", flip_test)) if v is not None}
        return ModelSpec(tuple(replace(s, **changes) for s in self.stages))

    def take(self, n: int | None) -> ModelSpec:
        """The first n stages (all for None)."""
        if n is not None and n > len(self.stages):
            raise PoserError(f"`stages` {n}: the model has {len(self.stages)} stage(s)")
        return ModelSpec(self.stages[:n])

    def summary(self) -> dict:
        """What reports and keypoints.json say about the model."""
        f = self.first
        return {"backbone": f.backbone, "head": f.head, "input_size": f.input_size, "skeleton": f.skeleton,
                "stages": len(self.stages), "epoch": self.stages[-1].epoch}
