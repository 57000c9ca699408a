"""Shared machinery for every loss: input checks, class counts, switchable class weights."""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from longtail.checks import check_class_vector


def check_param(name: str, value, *, positive: bool = False, non_negative: bool = False) -> float:
    """Return `value` as a float, or raise ValueError naming the hyper-parameter."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if non_negative and v < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return v


def check_class_counts(class_counts, num_classes: int | None = None) -> torch.Tensor:
    """Return class counts as a float64 CPU tensor, or raise ValueError naming the problem."""
    return check_class_vector(class_counts, "class_counts", num_classes,
                              hint="(a class with no training images cannot be learned: drop it or fix the split)")


def check_inputs(logits: torch.Tensor, target: torch.Tensor, num_classes: int, check_values: bool = True) -> None:
    """Raise ValueError unless logits is (B, C) with C == num_classes and target is (B,) integer labels.

    With `check_values`, also that the labels lie in [0, C) and the logits are finite. Those two read
    the tensors' values, which on a GPU is a device-to-host sync that stalls the queue of kernels;
    the trainer turns them off (it validates labels when loading data and watches the loss itself).
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be a (batch, classes) tensor, got {getattr(logits, 'shape', type(logits))}")
    if logits.shape[1] != num_classes:
        raise ValueError(f"logits has {logits.shape[1]} columns but the loss was built for {num_classes} classes")
    if not isinstance(target, torch.Tensor) or target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must be a 1-D tensor of {logits.shape[0]} class indices (one per logits row), "
                         f"got {getattr(target, 'shape', type(target))}")
    if target.dtype.is_floating_point or target.dtype == torch.bool or target.dtype.is_complex:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if logits.shape[0] == 0:  # every mean over it would be 0/0 = NaN
        raise ValueError("the batch is empty (0 samples): a loss over no samples is undefined")
    if not check_values:
        return
    check_label_range(target, num_classes)
    if not torch.isfinite(logits).all():
        raise ValueError("logits contain NaN or inf (diverged model or bad input); lower the learning rate "
                         "or check the data")


def check_label_range(target: torch.Tensor, num_classes: int) -> None:
    """Raise ValueError unless every label lies in [0, num_classes) (reads the values: a sync on GPU)."""
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"target labels must lie in [0, {num_classes}), got range "
                         f"[{int(target.min())}, {int(target.max())}]")


def check_cosine_logits(logits: torch.Tensor, scale: float) -> None:
    """Raise ValueError unless |logits| <= scale (with rounding room): cos * scale from a cosine head
    of this scale. Linear-head logits, or a head of another scale, would give silently wrong margins."""
    largest = float(logits.detach().abs().max()) if logits.numel() else 0.0
    if largest > scale * (1 + 1e-3):
        raise ValueError(f"logits reach {largest:.4g}, beyond the loss's scale {scale:g}: this loss expects "
                         f"cos * scale from a cosine head of the same scale (longtail.heads.CosineHead(..., "
                         f"scale={scale:g})), not a linear layer's logits")


def check_label_smoothing(value) -> float:
    """Return the label-smoothing eps as a float in [0, 1), or raise ValueError naming it."""
    eps = check_param("label_smoothing", value, non_negative=True)
    if eps >= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1) (1 would ignore the labels), got {value!r}")
    return eps


def class_balanced_weights(class_counts, beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights (Cui et al.): w_j = (1 - beta) / (1 - beta^n_j), normalised to sum to C."""
    counts = check_class_counts(class_counts)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must lie in [0, 1), got {beta}")
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (w / w.sum() * counts.numel()).float()


def focal_mean(ce: torch.Tensor, gamma: float, detach_weight: bool = False) -> torch.Tensor:
    """mean_i (1 - p_i)^gamma * ce_i with p_i = exp(-ce_i): the focal weighting of per-sample losses.
    `detach_weight` makes the weight a constant for the gradient (the GCL release does; LDAM-DRW's
    focal loss does not)."""
    if gamma == 0.0:
        return ce.mean()
    # 1 - exp(-ce) via expm1 keeps digits for confident samples; clamp guards ce rounding below 0.
    one_minus_p = (-torch.expm1(-(ce.detach() if detach_weight else ce))).clamp_min(0.0)
    return (one_minus_p.pow(gamma) * ce).mean()


class LongTailLoss(nn.Module):
    """Base of every loss: built from `class_counts`, called as `loss(logits, target)`.

    Subclasses implement `compute(logits, target)`. Class weights (for DRW or `cb`) can be
    switched on or off at any time with `set_class_weights`; they enter the cross-entropy as
    PyTorch's `weight=` does (weighted mean: sum_i w_{y_i} l_i / sum_i w_{y_i}).

    `label_smoothing` eps makes each sample's CE term l_i = (1 - eps) * CE_i + eps * mean_j(-log p_ij)
    (Szegedy et al. 2016), on whatever logits the loss passes to `cross_entropy`; a loss offers it as a
    constructor parameter where its per-sample term is that CE.

    Inside `with loss.frozen():` training calls leave the loss's state (GALA's statistics) unchanged.
    """

    def __init__(self, class_counts: Sequence[float] | torch.Tensor, check_values: bool = True,
                 label_smoothing: float = 0.0):
        super().__init__()
        counts = check_class_counts(class_counts)
        self.num_classes = counts.numel()
        self.check_values = check_values
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.register_buffer("class_counts", counts.float(), persistent=False)
        self.register_buffer("class_weights", torch.ones(self.num_classes), persistent=True)
        self.weighted = False
        self.updates_state = True  # False inside `frozen()`

    def set_class_weights(self, weights: torch.Tensor | Sequence[float] | None) -> None:
        """Switch per-class weights on (a length-C positive vector) or off (None)."""
        if weights is None:
            self.class_weights.fill_(1.0)
            self.weighted = False
            return
        try:
            w = torch.as_tensor(weights, dtype=torch.float32).detach()  # constants: no gradient through them
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"class weights must be {self.num_classes} numbers, got {weights!r}") from None
        if w.shape != (self.num_classes,) or not torch.isfinite(w).all() or (w < 0).any() or not (w > 0).any():
            raise ValueError(f"class weights must be {self.num_classes} non-negative finite numbers, not all zero "
                             f"(a weighted mean over zero weight is 0/0), got shape {tuple(w.shape)}")
        self.class_weights.copy_(w.to(self.class_weights.device))
        self.weighted = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # `weighted` is derived from the restored buffer: weights that are not all ones are switched on
        self.weighted = bool((self.class_weights != 1).any())

    @contextmanager
    def frozen(self) -> Iterator[LongTailLoss]:
        """Within, training calls compute as usual but update no state: SAM's first (ascent) pass, so that
        a step adds its batch to GALA's statistics once. Losses without state are unaffected."""
        before = self.updates_state
        self.updates_state = False
        try:
            yield self
        finally:
            self.updates_state = before

    def cross_entropy(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """CE with the current class weights (if switched on) and label smoothing (if set)."""
        weight = self.class_weights.to(logits.dtype) if self.weighted else None
        if weight is None or not self.label_smoothing:
            return F.cross_entropy(logits, target, weight=weight, reduction=reduction,
                                   label_smoothing=self.label_smoothing)
        # F.cross_entropy would weight the smoothing part of row i by each class's own w_j; here the
        # whole smoothed term l_i takes w_{y_i}, as every other per-sample term does.
        sample_weight = weight[target]
        weighted = F.cross_entropy(logits, target, reduction="none", label_smoothing=self.label_smoothing) * sample_weight
        if reduction == "none":
            return weighted
        return weighted.sum() if reduction == "sum" else weighted.sum() / sample_weight.sum()

    # ALA, LDAM and GCL read cos as logits / scale: their logits must come from a cosine head
    cosine_head = False

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.check(logits, target)
        if target.dtype != torch.int64:  # int32 / uint8 labels: torch's losses and indexing want int64
            target = target.long()
        return self.compute(logits, target)

    def check(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Raise ValueError for inputs this loss cannot take (see check_inputs)."""
        check_inputs(logits, target, self.num_classes, self.check_values)
        if self.cosine_head and self.check_values:
            check_cosine_logits(logits, self.scale)

    def _apply(self, fn, recurse=True):
        # float64 buffers are float64 on purpose (GALA's running sums of millions of small numbers):
        # `.half()`, `.to(torch.bfloat16)` or casting a model that holds the loss moves them, never casts them
        kept = {name: b for name, b in self._buffers.items() if b is not None and b.dtype == torch.float64}
        super()._apply(fn, recurse)
        for name, b in kept.items():
            if self._buffers[name].dtype != torch.float64:
                self._buffers[name] = b.to(self._buffers[name].device)
        return self

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def extra_repr(self) -> str:
        smoothing = f", label_smoothing={self.label_smoothing}" if self.label_smoothing else ""
        return f"num_classes={self.num_classes}, weighted={self.weighted}{smoothing}"
