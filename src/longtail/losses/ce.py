"""Cross-entropy, focal loss and class-balanced cross-entropy (SPEC section 3)."""
from __future__ import annotations

import torch

from longtail.dtypes import at_least_float32
from longtail.losses.base import LongTailLoss, check_param, class_balanced_weights, focal_mean


class CrossEntropy(LongTailLoss):
    """Plain cross-entropy on z ("ce"), optionally label-smoothed (the base's `label_smoothing`)."""

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.cross_entropy(at_least_float32(logits), target)


class Focal(LongTailLoss):
    """Focal loss ("focal"): mean_i (1 - p_i)^gamma * l_i.

    As in LDAM-DRW's FocalLoss, l_i = w_{y_i} * CE_i when class weights are on, p_i = exp(-l_i)
    (so p_i = p_{y_i} exactly when unweighted), and the result is a plain mean over the batch.
    """

    def __init__(self, class_counts, gamma: float = 1.0, check_values: bool = True):
        super().__init__(class_counts, check_values=check_values)
        self.gamma = check_param("gamma", gamma, non_negative=True)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_mean(self.cross_entropy(at_least_float32(logits), target, reduction="none"), self.gamma)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}"


class ClassBalancedCE(LongTailLoss):
    """Cross-entropy weighted by class-balanced weights (Cui et al.), switched on from construction ("cb")."""

    def __init__(self, class_counts, beta: float = 0.9999, check_values: bool = True, label_smoothing: float = 0.0):
        super().__init__(class_counts, check_values=check_values, label_smoothing=label_smoothing)
        self.beta = check_param("beta", beta)
        self.set_class_weights(class_balanced_weights(self.class_counts, self.beta))

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.cross_entropy(at_least_float32(logits), target)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta}"
