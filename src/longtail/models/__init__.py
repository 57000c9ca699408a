"""Models: backbones by name (a small timm-style registry) and the `Classifier` = backbone + head.

    model = build_model("resnet32", num_classes=100, head="cosine")
    logits = model(x); feats = model.features(x)

Backbones map images to (B, feature_dim) features; the classifier head comes from
`longtail.heads.build_head`. `pretrained=path` loads a backbone state dict; for the ImageNet-style
networks (IMAGENET_BACKBONES) the names are torchvision's, so torchvision's ImageNet `.pth` files load
directly; normalise their inputs with PRETRAINED_MEAN / PRETRAINED_STD.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..heads import LinearHead, build_head
from ..safe_load import UnsafeFileError, load_tensors
from .resnet import (
    PRETRAINED_MEAN,
    PRETRAINED_STD,
    ResNet,
    resnet10,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnext50_32x4d,
)
from .resnet_cifar import CifarResNet, resnet32
from .small import MLP, ConvNet, convnet, mlp

__all__ = ["Classifier", "build_model", "available_models", "register_model", "load_backbone_weights",
           "IMAGENET_BACKBONES", "PRETRAINED_MEAN", "PRETRAINED_STD", "CifarResNet", "ResNet", "ConvNet", "MLP"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, fn: Callable[..., nn.Module] | None = None):
    """Register a backbone builder `fn(in_channels=...) -> nn.Module` with a `num_features` attribute.
    Usable as a decorator: @register_model("mynet")."""
    def deco(f):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = f
        return f
    return deco(fn) if fn is not None else deco


# the backbones whose parameter names and shapes are torchvision's: its ImageNet weights load into them
IMAGENET_BACKBONES = ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d")

for _name, _fn in [("resnet32", resnet32), ("resnet10", resnet10), ("resnet18", resnet18), ("resnet34", resnet34),
                   ("resnet50", resnet50), ("resnet101", resnet101), ("resnet152", resnet152),
                   ("resnext50_32x4d", resnext50_32x4d), ("convnet", convnet), ("mlp", mlp)]:
    register_model(_name, _fn)


def available_models() -> list[str]:
    return sorted(_REGISTRY)


class Classifier(nn.Module):
    """backbone (images -> features) followed by a head (features -> logits)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_dim = int(backbone.num_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a state dict into a backbone, strictly. Accepts a bare state dict or one under the key
    'state_dict' / 'model'; strips 'module.' (DDP) and 'backbone.' prefixes; ignores the
    classifier ('fc.*', 'head.*', 'linear.*'). Batch-norm 'num_batches_tracked' counters may be
    absent (torchvision's ResNet-18 to 152 files predate them): the backbone keeps its own. Any other
    missing or unexpected name, or a shape mismatch, raises a ValueError that lists them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    try:
        state = load_tensors(path)
    except UnsafeFileError:
        raise
    except Exception as exc:  # torch.load's errors for a bad file vary: zip, pickle, EOF
        raise ValueError(f"pretrained weights {path} are not a readable .pt file (truncated or damaged?): "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    clean = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.split(".")[0] in ("fc", "head", "linear"):
            continue
        clean[k] = v
    own = backbone.state_dict()
    for k in own:
        if k.endswith(".num_batches_tracked") and k not in clean:
            clean[k] = own[k]
    missing = sorted(set(own) - set(clean))
    unexpected = sorted(set(clean) - set(own))
    shapes = sorted(f"{k}: file {tuple(clean[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(clean) if clean[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        def show(xs):
            return ", ".join(xs[:8]) + (f" ... ({len(xs)} in all)" if len(xs) > 8 else "")
        parts = [f"missing: {show(missing)}" if missing else "",
                 f"unexpected: {show(unexpected)}" if unexpected else "",
                 f"shape mismatch: {show(shapes)}" if shapes else ""]
        raise ValueError(f"pretrained weights {path} do not match backbone {type(backbone).__name__} "
                         f"(expected torchvision-style names such as conv1.weight, layer1.0.bn1.weight): "
                         + "; ".join(p for p in parts if p))
    backbone.load_state_dict(clean, strict=True)


def build_model(name: str, num_classes: int, head: str = "linear", scale: float = 30.0,
                in_channels: int = 3, pretrained: str | None = None) -> Classifier:
    """Backbone `name` (see available_models()) + a "linear" or "cosine" head for num_classes."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    backbone = _REGISTRY[name](in_channels=in_channels)
    if pretrained:
        load_backbone_weights(backbone, pretrained)
    h = build_head(head, backbone.num_features, num_classes, scale=scale)
    if name == "resnet32" and isinstance(h, LinearHead):
        # The released CIFAR code (LDAM-DRW / GALA) kaiming-initialises the linear classifier too.
        nn.init.kaiming_normal_(h.weight)
    return Classifier(backbone, h)
