"""Batched crops and augmentation on the training device: the CPU only decodes JPEGs.

Shapes: N instances, K joints, S model input side. For each batch, crop parameters (scale,
shift, rotation, flip, half-body) are drawn in numpy from a generator the caller seeds, turned
into image-to-input matrices by the shared geometry, and applied to the whole uint8 batch at
once with `geometry.warp_batch` (grid_sample) on whatever device the batch is on; keypoints go
through the same matrices. With `aug=None` the same code makes evaluation crops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from poser import geometry as g
from poser.codec import MARGIN, encode_keypoints, normalize_input
from poser.skeletons import Skeleton


@dataclass
class Augment:
    scale: float = 0.25        # crop side x U(1 - scale, 1 + scale): box-size jitter
    shift: float = 0.08        # crop centre + U(-shift, shift) x side: box-position jitter
    rotate: float = 30.0       # degrees, U(-rotate, rotate) ...
    rotate_prob: float = 0.6   # ... for this share of samples
    flip: float = 0.5
    half_body: float = 0.15    # crop around the upper or the lower body only
    color: float = 0.3         # brightness / contrast / saturation factors in 1 +- color
    loose: float = 0.3         # share of loose crops (between the person box and the whole photo) ...
    whole: float = 0.5         # ... of which this share is the whole photo, as the person search starts
    # Everyday photos (issue 24): people partly hidden, cut by the frame, blurred, noisy, dark.
    occlude: float = 0.0       # share of crops with 1-2 occluders (another crop's patch or noise) on a joint
    truncate: float = 0.0      # share of crops cut at a frame edge (black beyond; joints there unlabelled)
    degrade: float = 0.0       # share of crops blurred, noised or darkened (one of the three)
    sticks: float = 0.0        # share of crops with a held stick (pole, bat, racket) drawn from a wrist
    crowd: float = 0.0         # share of crops with another person beside (and partly over) the one labelled


def crop_matrices(
    boxes: np.ndarray, keypoints: np.ndarray, size: int, skeleton: Skeleton,
    aug: Augment | None = None, rng: np.random.Generator | None = None, margin: float = MARGIN,
    photos: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, 3) source-to-input matrices and (N,) flip flags for boxes (N, 4) xywh; `photos`
    (N, 4) xywh, the whole photo of each (for loose crops)."""
    n = len(boxes)
    center, side = g.box_to_square(boxes, margin)
    if aug is None:
        return g.crop_matrix(center, side, size), np.zeros(n, bool)
    rng = rng or np.random.default_rng()
    if aug.half_body > 0:
        center, side = _half_body(center, side, keypoints, skeleton, aug.half_body, rng)
    if photos is not None and aug.loose > 0:
        center, side = _loose(center, side, photos, margin, aug, rng)
    side = side * rng.uniform(1 - aug.scale, 1 + aug.scale, n)
    center = center + rng.uniform(-aug.shift, aug.shift, (n, 2)) * side[:, None]
    rot = np.where(rng.random(n) < aug.rotate_prob, rng.uniform(-aug.rotate, aug.rotate, n), 0.0)
    flip = rng.random(n) < aug.flip
    return g.crop_matrix(center, side, size, rot, flip), flip


def _loose(center, side, photos, margin, aug, rng):
    """Replace a share of crops by looser ones: the whole photo as the person search's first
    pass crops it (the photo as the box, grown to a square x margin), or a crop part of the
    way there (centre and log-side interpolated by t ~ U(0, 1)); box jitter applies on top."""
    pc, ps = g.box_to_square(photos, margin)
    pick = rng.random(len(side)) < aug.loose
    t = np.where(rng.random(len(side)) < aug.whole, 1.0, rng.random(len(side)))
    t = np.where(pick & (ps > side), t, 0.0)         # never tighter than the person's own crop
    center = center + (pc - center) * t[:, None]
    side = side * (np.maximum(ps, side) / side) ** t
    return center, side


def _half_body(center, side, keypoints, skeleton, prob, rng):
    upper = [j for grp in ("head", "shoulders", "elbows", "wrists") for j in skeleton.groups.get(grp, ())]
    lower = [j for grp in ("hips", "knees", "ankles") for j in skeleton.groups.get(grp, ())]
    center, side = center.copy(), side.copy()
    for i in np.flatnonzero(rng.random(len(side)) < prob):
        part = upper if rng.random() < 0.5 else lower
        kp = keypoints[i, part]
        kp = kp[kp[:, 2] > 0]
        if len(kp) < 3:
            continue
        lo, hi = kp[:, :2].min(0), kp[:, :2].max(0)
        if max(hi - lo) <= 0:           # the part's joints coincide: no extent to crop to
            continue
        center[i] = (lo + hi) / 2
        side[i] = min(side[i], max(hi - lo) * 1.5 * MARGIN)   # never zoom out past the person
    return center, side


def _color(x: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    n = x.shape[0]
    f = torch.as_tensor(rng.uniform(1 - strength, 1 + strength, (3, n, 1, 1, 1)), dtype=x.dtype, device=x.device)
    x = x * f[0]                                                           # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * f[1] + mean                                           # contrast
    gray = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(
        1, keepdim=True)
    return ((x - gray) * f[2] + gray).clamp(0, 1)                          # saturation


def _occlude(x: torch.Tensor, kp: np.ndarray, has: np.ndarray, prob: float, rng: np.random.Generator) -> None:
    """In place: for `prob` of the crops, 1-2 rectangles (0.12-0.35 of the side, aspect 1:2-2:1)
    centred near a random labelled joint, filled with the same place of another crop of the
    batch or with noise. The joints under them keep their labels: the model learns to guess
    them from the rest of the body, as COCO labels occluded joints."""
    n, _, s, _ = x.shape
    chosen = np.flatnonzero(rng.random(n) < prob)
    donor = x[(chosen - 1) % n].clone() if len(chosen) else None     # each chosen crop's neighbour, before edits
    for c_i, i in enumerate(chosen):
        labelled = np.flatnonzero(has[i])
        for _ in range(rng.integers(1, 3)):
            c = kp[i, rng.choice(labelled), :2] if len(labelled) else rng.uniform(-0.3, 0.3, 2)
            c = c + rng.normal(0, 0.05, 2)
            area, aspect = rng.uniform(0.12, 0.35) ** 2, np.exp(rng.uniform(-0.7, 0.7))
            w, h = np.sqrt(area * aspect) * s, np.sqrt(area / aspect) * s
            cx, cy = (c + 0.5) * s
            x0, x1 = int(max(0, cx - w / 2)), int(min(s, cx + w / 2))
            y0, y1 = int(max(0, cy - h / 2)), int(min(s, cy + h / 2))
            if x1 <= x0 or y1 <= y0:
                continue
            if rng.random() < 0.7:
                x[i, :, y0:y1, x0:x1] = donor[c_i, :, y0:y1, x0:x1]
            else:
                x[i, :, y0:y1, x0:x1] = torch.rand(3, 1, 1, device=x.device) * torch.rand(
                    1, y1 - y0, x1 - x0, device=x.device).add_(0.5).clamp_(max=1)


def _crowd(x: torch.Tensor, prob: float, rng: np.random.Generator) -> None:
    """In place: for `prob` of the crops, another crop of the batch (a person centred in it)
    shrunk to 0.6-1.0 of the side and pasted beside the centre, 0.35-0.65 of the side to the left
    or right, through a soft ellipse around that person: two people in one crop, as skiers
    in a line or a batter and the catcher in a COCO box. The labels stay the centred person's,
    also for joints the newcomer hides: the model learns to keep to the person the box is about.
    LSP-Extended's photos hold one person each, so nothing else teaches this."""
    n, _, s, _ = x.shape
    chosen = np.flatnonzero(rng.random(n) < prob)
    if n < 2 or not len(chosen):
        return
    k = rng.uniform(0.6, 1.0, len(chosen))                                  # the newcomer's scale
    centre = (s - 1) / 2 + s * np.stack([rng.choice([-1, 1], len(chosen)) * rng.uniform(0.35, 0.65, len(chosen)),
                                         rng.uniform(-0.1, 0.1, len(chosen))], 1)     # (C, 2) crop pixels
    m = np.zeros((len(chosen), 2, 3))                                       # donor crop -> this crop
    m[:, 0, 0] = m[:, 1, 1] = k
    m[:, :, 2] = centre - k[:, None] * (s - 1) / 2
    pasted = g.warp_batch(x[(chosen + 1) % n], m, s)                        # read before any paste
    # The person: a tall ellipse (half-axes 0.26 and 0.48 of the newcomer's side, inside its
    # crop, so the warp's black border never shows), its edge feathered.
    px = torch.arange(s, device=x.device, dtype=x.dtype)
    c = torch.as_tensor(centre, device=x.device, dtype=x.dtype)[:, :, None, None]       # (C, 2, 1, 1)
    side = torch.as_tensor(k * s, device=x.device, dtype=x.dtype)[:, None, None]
    r = ((px[None, None, :] - c[:, 0]) / (0.26 * side)) ** 2 + ((px[None, :, None] - c[:, 1]) / (0.48 * side)) ** 2
    alpha = (1 - r).mul_(4).clamp_(0, 1)[:, None]                            # (C, 1, S, S)
    x[chosen] = x[chosen] * (1 - alpha) + pasted * alpha


def _truncate(x: torch.Tensor, kp: np.ndarray, has: np.ndarray, prob: float, rng: np.random.Generator) -> None:
    """In place: for `prob` of the crops, a frame edge 15-45% into the crop from one side (the
    bottom twice as often: legs cut by the frame are the commonest case). Beyond it the crop is
    black, as beyond a photo's edge; joints there lose their labels (COCO leaves out-of-frame
    joints unlabelled)."""
    n, _, s, _ = x.shape
    for i in np.flatnonzero(rng.random(n) < prob):
        side, cut = rng.choice(4, p=[0.2, 0.2, 0.2, 0.4]), int(round(rng.uniform(0.15, 0.45) * s))
        edge = 0.5 - cut / s                         # the frame edge, in normalised crop coordinates
        if side == 0:                                # left
            x[i, :, :, :cut], gone = 0, kp[i, :, 0] < -edge
        elif side == 1:                              # right
            x[i, :, :, s - cut:], gone = 0, kp[i, :, 0] > edge
        elif side == 2:                              # top
            x[i, :, :cut, :], gone = 0, kp[i, :, 1] < -edge
        else:                                        # bottom
            x[i, :, s - cut:, :], gone = 0, kp[i, :, 1] > edge
        has[i] &= ~gone


def _degrade(x: torch.Tensor, prob: float, rng: np.random.Generator) -> torch.Tensor:
    """For `prob` of the crops one of: Gaussian blur (sigma 0.6-2 px), sensor noise (sigma
    0.01-0.06), or low light (gamma 1.5-3, then x 0.5-1)."""
    n = x.shape[0]
    pick = np.flatnonzero(rng.random(n) < prob)
    kind = rng.integers(0, 3, len(pick))
    for i, k in zip(pick, kind, strict=True):
        if k == 0:
            from torchvision.transforms.functional import gaussian_blur

            sigma = float(rng.uniform(0.6, 2.0))
            x[i] = gaussian_blur(x[i: i + 1], [2 * int(3 * sigma) + 1] * 2, [sigma, sigma])[0]
        elif k == 1:
            x[i] = (x[i] + torch.randn_like(x[i]) * float(rng.uniform(0.01, 0.06))).clamp_(0, 1)
        else:
            x[i] = x[i].pow(float(rng.uniform(1.5, 3.0))) * float(rng.uniform(0.5, 1.0))
    return x


def _sticks(x: torch.Tensor, kp: np.ndarray, has: np.ndarray, skeleton: Skeleton, prob: float,
            rng: np.random.Generator) -> None:
    """In place: for `prob` of the crops, a thin straight stick (a ski pole, bat, racket or
    umbrella shaft: 1-4 px, 0.2-0.7 of the side, any colour, sometimes a knob at its far end)
    held at one or both labelled wrists: half of them carry on the forearm's line (elbow to
    wrist, give or take 25 degrees), the rest point anywhere. The wrist keeps its label: on
    LSP-Extended's sports photos a hand rarely holds anything, and a model trained there puts
    a skier's wrist at the pole's tip, carrying the lower arm along the pole (measured on the
    COCO sample: the wrist 0.2 torso lengths off, 0.39 too high on average, where the pole
    goes on from the forearm; sticks pointing anywhere alone did not move it)."""
    wrists = [skeleton.index(j) for j in ("left_wrist", "right_wrist") if j in skeleton.joints]
    elbow = {limb.b: limb.a for limb in skeleton.pcp_limbs if limb.kind == "lower_arm"}     # wrist: elbow
    n, _, s, _ = x.shape
    yy, xx = torch.meshgrid(torch.arange(s, device=x.device, dtype=x.dtype),
                            torch.arange(s, device=x.device, dtype=x.dtype), indexing="ij")
    for i in np.flatnonzero(rng.random(n) < prob):
        held = [w for w in wrists if has[i, w]]
        for w in rng.permutation(held)[: rng.integers(1, 3)]:
            a = (kp[i, w, :2] + 0.5) * s + rng.normal(0, 0.01 * s, 2)       # the hand, in pixels
            angle = rng.uniform(0, 2 * np.pi)
            e = elbow.get(int(w))
            if e is not None and has[i, e] and rng.random() < 0.5:
                fore = kp[i, w, :2] - kp[i, e, :2]
                angle = np.arctan2(fore[1], fore[0]) + rng.normal(0, np.deg2rad(25))
            d = np.array([np.cos(angle), np.sin(angle)])
            p0, p1 = a - d * rng.uniform(0, 0.1) * s, a + d * rng.uniform(0.2, 0.7) * s   # grip end, far end
            _segment(x[i], xx, yy, p0, p1, rng.uniform(1, 4), torch.rand(3, 1, 1, device=x.device))
            if rng.random() < 0.5:                   # a basket, a racket's head, a tip of another colour
                _segment(x[i], xx, yy, p1, p1, rng.uniform(3, 8), torch.rand(3, 1, 1, device=x.device))


def _segment(img: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor, p0: np.ndarray, p1: np.ndarray,
             width: float, color: torch.Tensor) -> None:
    """Paint the segment p0-p1 (pixels), `width` px wide and anti-aliased, in `color` onto img (3, S, S)."""
    v = p1 - p0
    t = ((xx - p0[0]) * v[0] + (yy - p0[1]) * v[1]) / max(float(v @ v), 1e-6)
    t = t.clamp(0, 1)
    dist = torch.hypot(xx - (p0[0] + t * v[0]), yy - (p0[1] + t * v[1]))
    alpha = (width / 2 + 0.5 - dist).clamp(0, 1)
    img.mul_(1 - alpha).add_(alpha * color)


def make_batch(
    images: torch.Tensor, boxes: np.ndarray, keypoints: np.ndarray, size: int, skeleton: Skeleton,
    aug: Augment | None = None, rng: np.random.Generator | None = None, channels_last: bool = True,
    joint_mask: np.ndarray | None = None, photos: np.ndarray | None = None,
) -> dict[str, torch.Tensor | np.ndarray]:
    """Model inputs and targets for a batch.

    images: (N, 3, H, W) uint8 RGB on the target device; boxes (N, 4) and keypoints (N, K, 3)
    in the same pixels; photos (N, 4) the whole photos there, for loose crops. Returns x
    (N, 3, S, S) normalised; target (N, K, 2) normalised crop coordinates; weight (N, K) 1 where
    the joint has a position; visible (N, K) 1 where it has one inside the crop; matrix (N, 2, 3)
    source-to-input (numpy, to map predictions back).
    """
    if aug is not None:
        rng = rng or np.random.default_rng()       # one generator for the geometry and the colour
    m, flip = crop_matrices(boxes, keypoints, size, skeleton, aug, rng, photos=photos)
    x = g.warp_batch(images.float().div_(255), m, size)
    if aug is not None and aug.color > 0:
        x = _color(x, aug.color, rng)
    kp = keypoints.copy()
    kp[..., :2] = encode_keypoints(m, keypoints[..., :2], size)
    kp[flip] = kp[flip][:, skeleton.flip_index]                            # left is right in a mirror
    has = kp[..., 2] > 0
    if aug is not None and aug.crowd > 0:          # before the frame cut: a photo's edge cuts both people
        _crowd(x, aug.crowd, rng)
    if aug is not None and aug.truncate > 0:
        _truncate(x, kp, has, aug.truncate, rng)
    if aug is not None and aug.occlude > 0:
        _occlude(x, kp, has, aug.occlude, rng)
    if aug is not None and aug.sticks > 0:
        _sticks(x, kp, has, skeleton, aug.sticks, rng)
    if aug is not None and aug.degrade > 0:
        x = _degrade(x, aug.degrade, rng)
    x = normalize_input(x, channels_last=channels_last)
    inside = has & (np.abs(kp[..., :2]) <= 0.5).all(-1)
    weight = has
    if joint_mask is not None:       # (N, K): train only these joints' coordinates (cascade stages)
        mask = joint_mask.copy()
        mask[flip] = mask[flip][:, skeleton.flip_index]
        weight = has & (mask > 0)
    dev = images.device
    return {
        "x": x,
        "target": torch.as_tensor(np.where(has[..., None], kp[..., :2], 0.0), dtype=torch.float32, device=dev),
        "weight": torch.as_tensor(weight, dtype=torch.float32, device=dev),
        "visible": torch.as_tensor(inside, dtype=torch.float32, device=dev),
        "matrix": m,
        "flip": flip,
    }
