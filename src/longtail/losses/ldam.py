"""LDAM: label-distribution-aware margin loss on the cosine head (SPEC section 3)."""
from __future__ import annotations

import torch

from longtail.dtypes import at_least_float32
from longtail.losses.base import LongTailLoss, check_param


class LDAM(LongTailLoss):
    """LDAM ("ldam"): z_y <- s * (cos_y - m_y), m_j = K / n_j^(1/4) with max_j m_j = max_margin; CE.

    Expects cosine-head logits z = scale * cos, so subtracting scale * m_y from z_y is the margin.
    """

    cosine_head = True

    def __init__(self, class_counts, max_margin: float = 0.5, scale: float = 30.0, check_values: bool = True,
                 label_smoothing: float = 0.0):
        super().__init__(class_counts, check_values=check_values, label_smoothing=label_smoothing)
        self.max_margin = check_param("max_margin", max_margin, positive=True)
        self.scale = check_param("scale", scale, positive=True)
        m = self.class_counts.double().pow(-0.25)
        self.register_buffer("margins", (m * (self.max_margin / m.max())).float(), persistent=False)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = at_least_float32(logits)
        shift = (self.scale * self.margins.to(z.dtype))[target].unsqueeze(1)
        return self.cross_entropy(z.scatter_add(1, target.unsqueeze(1), -shift), target)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_margin={self.max_margin}, scale={self.scale}"
