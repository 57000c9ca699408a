"""Classifier heads: a plain linear layer, and the scaled cosine head ALA, LDAM and GCL are defined on."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from longtail.dtypes import at_least_float32


class LinearHead(nn.Linear):
    """z = W f + b."""

    def __init__(self, in_features: int, num_classes: int, bias: bool = True):
        super().__init__(in_features, num_classes, bias=bias)


class CosineHead(nn.Module):
    """z_j = scale * <f/|f|, w_j/|w_j|>, no bias (SPEC section 2). Losses recover cos as z / scale."""

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0):
        super().__init__()
        if not (scale > 0 and scale != float("inf")):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        self.in_features, self.num_classes, self.scale = in_features, num_classes, float(scale)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # At least float32 even under autocast: a bf16 cosine keeps ~3 digits, which the scale
        # (30) turns into logit noise of ~0.05. Autocast would cast the matmul down, so it is off here.
        f = F.normalize(at_least_float32(features), dim=1)
        w = F.normalize(self.weight.to(f.dtype), dim=1)
        with torch.autocast(device_type=f.device.type, enabled=False):
            return self.scale * (f @ w.t())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.num_classes}, scale={self.scale}"


def build_head(kind: str, in_features: int, num_classes: int, scale: float = 30.0) -> nn.Module:
    if kind == "linear":
        return LinearHead(in_features, num_classes)
    if kind == "cosine":
        return CosineHead(in_features, num_classes, scale=scale)
    raise ValueError(f"unknown head {kind!r}; choose 'linear' or 'cosine'")
