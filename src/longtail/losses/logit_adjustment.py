"""Logit-adjusted cross-entropy and Balanced Softmax (SPEC section 3)."""
from __future__ import annotations

import torch

from longtail.dtypes import at_least_float32
from longtail.losses.base import LongTailLoss, check_param


class LogitAdjusted(LongTailLoss):
    """Logit Adjustment loss ("la"): CE on z_j + tau * log pi_j, pi_j = n_j / sum(n)."""

    def __init__(self, class_counts, tau: float = 1.0, check_values: bool = True, label_smoothing: float = 0.0):
        super().__init__(class_counts, check_values=check_values, label_smoothing=label_smoothing)
        self.tau = check_param("tau", tau)
        counts = self.class_counts.double()
        self.register_buffer("log_prior", torch.log(counts / counts.sum()).float(), persistent=False)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = at_least_float32(logits)
        return self.cross_entropy(z + self.tau * self.log_prior.to(z.dtype), target)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tau={self.tau}"


class BalancedSoftmax(LongTailLoss):
    """Balanced Softmax ("bs"): CE on z_j + log n_j (equals `la` with tau = 1)."""

    def __init__(self, class_counts, check_values: bool = True, label_smoothing: float = 0.0):
        super().__init__(class_counts, check_values=check_values, label_smoothing=label_smoothing)
        self.register_buffer("log_counts", torch.log(self.class_counts.double()).float(), persistent=False)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = at_least_float32(logits)
        return self.cross_entropy(z + self.log_counts.to(z.dtype), target)
