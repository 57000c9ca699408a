"""ALA: Adaptive Logit Adjustment on the cosine head (SPEC section 3, "ALA")."""
from __future__ import annotations

import math

import torch

from longtail.dtypes import at_least_float32
from longtail.losses.base import LongTailLoss, check_param


class ALA(LongTailLoss):
    """ALA ("ala"): z_{i,y} = s * (c_{i,y} - DF_i * QF_y), other logits s * c_ij; CE.

    DF_i = (1 - c_{i,y_i}) / 2, detached; QF_j = 1 / log(n_j / n_min + 1), times log 2 with
    `normalise_qf` so the rarest class has QF = 1. Expects cosine-head logits z = scale * cos.
    """

    cosine_head = True

    def __init__(self, class_counts, scale: float = 30.0, normalise_qf: bool = True, check_values: bool = True,
                 label_smoothing: float = 0.0):
        super().__init__(class_counts, check_values=check_values, label_smoothing=label_smoothing)
        self.scale = check_param("scale", scale, positive=True)
        self.normalise_qf = bool(normalise_qf)
        n = self.class_counts.double()
        qf = 1.0 / torch.log(n / n.min() + 1.0)
        if self.normalise_qf:
            qf = qf * math.log(2.0)
        self.register_buffer("quantity_factor", qf.float(), persistent=False)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = at_least_float32(logits)
        idx = target.unsqueeze(1)
        cos_y = z.gather(1, idx) / self.scale
        difficulty = ((1.0 - cos_y) / 2.0).detach()
        adjustment = difficulty * self.quantity_factor.to(z.dtype)[target].unsqueeze(1)
        return self.cross_entropy(z.scatter_add(1, idx, -self.scale * adjustment), target)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}, normalise_qf={self.normalise_qf}"
