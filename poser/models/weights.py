"""Weights and training state in safetensors: tensors plus JSON metadata, never pickle.

A weights file is self-describing: its metadata names the skeleton, backbone, input size,
normalisation, stage and poser version (`poser.spec.ModelSpec`), so eval and annotate rebuild
the model from the file alone. Training state is stored the same way (train/state.py).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from poser.errors import PoserError
from poser.files import atomic_path, missing_file
from poser.spec import ModelSpec
from poser.version import __version__

if TYPE_CHECKING:       # torch loads with the tensors, not for a file's metadata (inference needs only that)
    import torch

FORMAT = "poser-weights/1"


STORAGES = ("fp32", "fp16", "int8")
_SCALE = "@scale"           # suffix of an int8 tensor's per-output-channel scales


def _store(name: str, v: torch.Tensor, storage: str) -> dict[str, torch.Tensor]:
    """One tensor as stored. int8 quantises weight matrices and kernels symmetrically per output
    channel (1/4 of fp32 at ~0.4% error per weight); vectors (biases, norms) stay fp16, where
    a rounding error would shift every output of a channel alike."""
    import torch

    v = v.detach().cpu()
    if not v.is_floating_point() or storage == "fp32":
        return {name: v.contiguous()}
    if storage == "int8" and v.dim() >= 2 and v.numel() >= 1024:
        w = v.float().flatten(1)
        scale = w.abs().amax(1).clamp_min(1e-12) / 127.0
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return {name: q.view(v.shape).contiguous(), name + _SCALE: scale.contiguous()}
    return {name: v.half().contiguous()}


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], meta: dict, storage: str = "fp32") -> None:
    """Write model weights with `meta` (JSON-able) into `path`, atomically; `storage` is fp32,
    fp16 or int8 (loading always gives fp32 tensors back)."""
    if storage not in STORAGES:
        raise PoserError(f"unknown weight storage {storage!r} (one of {', '.join(STORAGES)})")
    tensors = {}
    for k, v in state_dict.items():
        tensors.update(_store(k, v, storage))
    md = {"format": FORMAT, "poser_version": __version__, "storage": storage, "meta": json.dumps(meta)}
    write_safetensors(path, tensors, md)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Tensors into `path`, atomically; a failure (a full disk) is one line naming the file, and
    what `path` held before is unchanged."""
    from safetensors.torch import save_file

    try:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
    except (SafetensorError, OSError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise PoserError(f"could not write {path}: {why}; what it held before is unchanged") from None


def save_model(path: Path, states: list[dict[str, torch.Tensor]], spec: ModelSpec, storage: str = "fp32") -> None:
    """A model in one file: one network's tensors as they are, or a cascade's with stage s's
    prefixed 'stage{s}.'; `spec` becomes the metadata (`ModelSpec.to_meta`)."""
    if len(states) != len(spec):
        raise ValueError(f"{len(states)} state dicts for a {len(spec)}-stage spec")
    if len(states) == 1:
        return save_weights(path, states[0], spec.to_meta(), storage)
    tensors = {f"stage{s}.{k}": v.detach().clone() for s, sd in enumerate(states, start=1) for k, v in sd.items()}
    save_weights(path, tensors, spec.to_meta(), storage)


def read_meta(path: Path) -> dict:
    """The metadata of a poser weights file; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise PoserError(missing_file(path))
    try:
        with safe_open(str(path), framework="numpy") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise PoserError(f"{path} is not a safetensors file ({e})") from None
    if md.get("format") != FORMAT:
        raise PoserError(f"{path} is a safetensors file but not poser weights (no '{FORMAT}' metadata)")
    try:
        return json.loads(md.get("meta", ""))
    except (ValueError, RecursionError):
        raise PoserError(f"{path}: its poser metadata is not JSON") from None


def read_spec(path: Path) -> ModelSpec:
    """The typed spec of a poser weights file (every file poser shipped reads)."""
    return ModelSpec.from_meta(read_meta(path), str(path))


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A weights file's tensors (as fp32, whatever the storage) and metadata."""
    import torch
    from safetensors.torch import load_file

    meta = read_meta(path)
    try:
        stored = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise PoserError(f"{path}: unreadable weights ({e})") from None
    state = {}
    for k, v in stored.items():
        if k.endswith(_SCALE):
            continue
        if k + _SCALE in stored:
            scale = stored[k + _SCALE].float()
            v = v.float() * scale.view(-1, *[1] * (v.dim() - 1))
        elif v.dtype == torch.float16:
            v = v.float()
        state[k] = v
    return state, meta


def export_weights(src: Path, dst: Path, storage: str = "fp16", decode_radius: float | None = None,
                   flip_test: bool | None = None, average_with: Path | None = None, share: float = 0.5,
                   skeleton: str | None = None) -> dict:
    """Re-store a weights file or cascade bundle (e.g. a run's best.safetensors as the fp16 or
    int8 file to ship); `decode_radius` records the integral head's measured decode radius
    (codec.local) for every stage, `flip_test` whether the flip test is the model's default
    (None: both as in `src`). `average_with` (a file of the same model) mixes its weights in,
    `share` of them, the rest `src`'s; `skeleton` then keeps only that skeleton's joints
    (`keep_joints`). Returns both sizes in bytes."""
    state, meta = load_weights(src)
    spec = ModelSpec.from_meta(meta, str(src))
    if average_with is not None:
        state, spec = average_states(state, spec, Path(average_with), share)
    if skeleton is not None:
        state, spec = keep_joints(state, spec, skeleton)
    save_weights(dst, state, spec.with_test(decode_radius, flip_test).to_meta(), storage)
    return {"src": str(src), "dst": str(dst), "storage": storage,
            "src_bytes": Path(src).stat().st_size, "dst_bytes": Path(dst).stat().st_size}


def keep_joints(state: dict[str, torch.Tensor], spec: ModelSpec,
                skeleton: str) -> tuple[dict[str, torch.Tensor], ModelSpec]:
    """`state` answering only `skeleton`'s joints, all of which it must know: an integral head's
    per-joint rows picked by name (a body19 model as the LSP-14 or COCO-17 file to ship). The
    rest of the network is untouched, so the picked joints' outputs are bit for bit the same."""
    from poser.skeletons import get_skeleton

    want = get_skeleton(skeleton)
    first = spec.first
    if first.skeleton == want.name:
        return state, spec
    lacking = [n for n in want.joints if n not in first.joints]
    if len(spec.stages) != 1 or first.head != "integral" or lacking:
        why = f"it lacks {', '.join(lacking)}" if lacking else "only a one-stage integral-head model's joints map"
        raise PoserError(f"cannot keep {want.name}'s joints of a {first.skeleton} model: {why}")
    rows, k = [first.joints.index(n) for n in want.joints], len(first.joints)
    kept = {name: v[rows] if per_joint(name, v, k) else v for name, v in state.items()}
    return kept, ModelSpec((replace(first, skeleton=want.name, joints=want.joints, metrics={}, trained_on=(
        first.trained_on or {}) | {"joints_of": first.skeleton}),))


def average_states(state: dict[str, torch.Tensor], spec: ModelSpec, other: Path,
                   share: float) -> tuple[dict[str, torch.Tensor], ModelSpec]:
    """`state` averaged with `other`'s weights, `share` of them: a model soup (Wortsman et al.,
    2022). Two fine-tunes of one pretrained network lie in one basin, so their average often
    keeps what each learned (e.g. an earlier leg's everyday people, a later leg's sports);
    both files must hold the same network (backbone, input size, every tensor's shape). Their
    skeletons may differ (an LSP-14 and a COCO-17 fine-tune of one network): a head's per-joint
    rows then average for the joints both know, by name, and keep `state`'s own for the rest.
    The spec keeps `state`'s, its provenance saying what was averaged in; the training-val
    metrics of one leg no longer describe the average, so they go."""
    if not 0.0 <= share <= 1.0:
        raise PoserError(f"the averaged file's share must lie in [0, 1], not {share}")
    theirs, their_meta = load_weights(other)
    their_spec = ModelSpec.from_meta(their_meta, str(other))
    mine_j, their_j = spec.first.joints, their_spec.first.joints
    shared = [n for n in mine_j if n in their_j]
    if mine_j != their_j and len(spec.stages) == 1 and shared:
        # Their head rows in my joints' order; my own rows where they lack the joint, so those mix
        # with themselves and stay mine.
        theirs = map_joint_rows(theirs, state, their_j, mine_j) if theirs.keys() == state.keys() else theirs
    nets = [(a.backbone, a.input_size, a.head) for a in spec.stages] == \
        [(b.backbone, b.input_size, b.head) for b in their_spec.stages]
    if not nets or not shared or theirs.keys() != state.keys() or any(theirs[k].shape != v.shape
                                                                      for k, v in state.items()):
        raise PoserError(f"{other} is another model (backbone, input size, head, joints or shapes differ): "
                         "only fine-tunes of one network average")
    mixed = {k: v.lerp(theirs[k], share) if v.is_floating_point() else v for k, v in state.items()}
    averaged = {"with": Path(other).name, "share": share}
    if mine_j != their_j:
        averaged["joints"] = shared
    return mixed, ModelSpec(tuple(
        replace(s, metrics={}, trained_on=(s.trained_on or {}) | {
            "averaged": [*(s.trained_on or {}).get("averaged", []), averaged]}) for s in spec.stages))


def per_joint(name: str, value: torch.Tensor, k: int) -> bool:
    """Whether a tensor of a K-joint model holds one row per joint (the integral head's heatmap
    and visibility outputs): what mapping, averaging or keeping joints moves by name."""
    return name.startswith("head.") and value.shape[:1] == (k,)


def map_joint_rows(src: dict, dst: dict, src_joints: tuple[str, ...], joints: tuple[str, ...],
                   stand_ins: dict[str, str] | None = None) -> dict:
    """`src`'s tensors with the head's per-joint rows (first dimension K) moved to `joints`' order
    by name; a joint `src` lacks keeps `dst`'s row, or takes a stand-in joint's row where
    `stand_ins` (for the visibility output, `head.visible.*`) names one `src` has."""
    out = dict(src)
    for name, value in dst.items():
        if per_joint(name, value, len(joints)) and per_joint(name, src[name], len(src_joints)):
            rows = value.clone()
            for k, joint in enumerate(joints):
                stand_in = (stand_ins or {}).get(joint) if name.startswith("head.visible.") else None
                source = joint if joint in src_joints else stand_in if stand_in in src_joints else None
                if source is not None:
                    rows[k] = src[name][src_joints.index(source)]
            out[name] = rows
    return out
