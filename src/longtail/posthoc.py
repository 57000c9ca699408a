"""Post-hoc adjustments of a trained classifier (SPEC section 4).

- Prediction re-balancing (PR, from the GALA paper): argmax_j z_ij - tau * log s_j, with
  s_j = sum_i softmax(z)_ij over a whole evaluation set.
- Post-hoc logit adjustment: argmax_j z_ij - tau * log pi_j.
- tau-normalisation of classifier weights: w_j / |w_j|^tau.
- `search_tau`: pick tau by validation top-1.

The honest protocol takes both the marginal and tau from the validation set::

    m_val = class_marginal(z_val)
    tau, acc, table = search_tau(z_val, y_val, lambda z, t: rebalance(z, t, marginal=m_val))
    preds = rebalance(z_test, tau, marginal=m_val).argmax(1)

The published (transductive) variant computes the marginal on the test logits themselves:
`rebalance(z_test, tau)`. Other adjustments plug into `search_tau` the same way, e.g.
`lambda z, t: adjust(z, train_counts, t)`.

All score functions here return scores whose row-wise argmax is the prediction; they are not
calibrated probabilities (softmax of them is not a meaningful confidence).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from longtail.checks import check_class_vector
from longtail.dtypes import working_dtype
from longtail.metrics import _check_logits, _check_targets

__all__ = ["class_marginal", "rebalance", "adjust", "tau_normalize", "default_taus", "search_tau"]


def _wide_dtype(t: torch.Tensor) -> torch.dtype:
    # float64 for exactness, except where the device has none (Apple MPS).
    return torch.float32 if t.device.type == "mps" else torch.float64


def _check_positive_vector(v, name: str, num_classes: int) -> torch.Tensor:
    return check_class_vector(v, name, num_classes, hint="(its log is taken)")


def _log_class_marginal(logits: torch.Tensor) -> torch.Tensor:
    """log s_j = logsumexp_i (z_ij - logsumexp_k z_ik): exact even where softmax underflows."""
    z = logits.to(_wide_dtype(logits))
    return torch.logsumexp(z - torch.logsumexp(z, dim=1, keepdim=True), dim=0)


def class_marginal(logits: torch.Tensor) -> torch.Tensor:
    """s_j = sum_i softmax(z_i)_j: the column sums (L1 norms) of the softmax, shape (C,).

    Computed in float64 (float32 on MPS) through logsumexp, on the logits' device. Its entries
    sum to the number of samples; only ratios between classes matter to `rebalance`.
    """
    logits = _check_logits(logits)
    if logits.shape[0] == 0:
        raise ValueError("logits has no rows: the class marginal needs at least one sample")
    return _log_class_marginal(logits).exp()


def rebalance(logits: torch.Tensor, tau: float, marginal: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
    """Prediction re-balancing: scores z_ij - tau * log s_j (argmax = argmax_j p_ij / s_j^tau).

    `marginal=None` takes s from `logits` themselves (transductive, as published). Otherwise
    `marginal` is a supplied s (e.g. `class_marginal(z_val)`, the honest variant); its overall
    scale is irrelevant (it shifts every score of a row equally). Returns a new (N, C) tensor of
    at least float32; only its argmax is meaningful, not a calibrated probability.
    """
    logits = _check_logits(logits)
    tau = float(tau)
    if not math.isfinite(tau):
        raise ValueError(f"tau must be finite, got {tau}")
    if marginal is None:
        if logits.shape[0] == 0:
            raise ValueError("logits has no rows: pass `marginal` (e.g. from validation) to rebalance an empty set")
        log_s = _log_class_marginal(logits)
    else:
        m = torch.as_tensor(marginal, dtype=torch.float64).detach().cpu()
        # A class no sample gives any probability underflows to exactly 0 (logit gaps above ~708):
        # floor it at the smallest float64 rather than reject it; its score then rises by about
        # tau*708, favouring the class nothing predicted, as the re-balancing intends.
        if m.numel() and bool((m == 0).all()):
            raise ValueError("marginal is all zeros: it must give each class's share of the predictions")
        m = torch.where(m == 0, torch.full_like(m, torch.finfo(torch.float64).tiny), m)
        log_s = _check_positive_vector(m, "marginal", logits.shape[1]).log()
    dt = working_dtype(logits.dtype)  # half-precision scores would round away small adjustments
    return logits.to(dt) - (tau * log_s).to(dt).to(logits.device)


def adjust(logits: torch.Tensor, class_counts, tau: float) -> torch.Tensor:
    """Post-hoc logit adjustment: scores z_ij - tau * log pi_j, pi = counts / sum(counts).

    Returns a new (N, C) tensor of at least float32; only its argmax is meaningful.
    """
    logits = _check_logits(logits)
    tau = float(tau)
    if not math.isfinite(tau):
        raise ValueError(f"tau must be finite, got {tau}")
    counts = _check_positive_vector(class_counts, "class_counts", logits.shape[1])
    log_pi = (counts / counts.sum()).log()
    dt = working_dtype(logits.dtype)  # half-precision scores would round away small adjustments
    return logits.to(dt) - (tau * log_pi).to(dt).to(logits.device)


@torch.no_grad()
def tau_normalize(weight: torch.Tensor, tau: float) -> torch.Tensor:
    """tau-normalisation (Kang et al. 2020): each class row w_j becomes w_j / |w_j|^tau.

    `weight` is the (C, D) classifier weight (extra dims are flattened into the row norm).
    Returns a new detached tensor of the same shape and dtype; the caller copies it into the
    head and drops (zeros) the bias, as the method prescribes. tau = 0 leaves the weights
    unchanged, tau = 1 gives unit-norm rows. An all-zero row stays zero. tau must lie in [0, 2].
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        raise ValueError(f"weight must be a (classes, features) tensor, got {getattr(weight, 'shape', type(weight))}")
    tau = float(tau)
    if not 0.0 <= tau <= 2.0:
        raise ValueError(f"tau must lie in [0, 2], got {tau}")
    if not torch.isfinite(weight).all():
        raise ValueError("weight contains NaN or inf")
    w = weight.detach()
    wide = w.to(_wide_dtype(w))
    norms = wide.flatten(1).norm(dim=1)
    # Zero rows are divided by 1 (a clamp to a tiny norm would underflow to 0/0 at tau = 2).
    divisor = torch.where(norms > 0, norms.pow(tau), torch.ones_like(norms))
    shape = (-1,) + (1,) * (w.dim() - 1)
    return (wide / divisor.view(shape)).to(w.dtype)


def default_taus(start: float = 0.0, stop: float = 2.0, step: float = 0.1) -> list[float]:
    """The grid start, start + step, ..., stop (inclusive), rounded to avoid float drift:
    default [0.0, 0.1, ..., 2.0]."""
    if step <= 0 or stop < start:
        raise ValueError(f"need step > 0 and stop >= start, got start={start}, stop={stop}, step={step}")
    n = int(math.floor((stop - start) / step + 1e-9))
    return [round(start + i * step, 10) for i in range(n + 1)]


def search_tau(logits_val: torch.Tensor, targets_val: torch.Tensor,
               fn: Callable[[torch.Tensor, float], torch.Tensor],
               taus: Sequence[float] | None = None) -> tuple[float, float, list[tuple[float, float]]]:
    """Choose tau by validation top-1 accuracy.

    `fn(logits, tau)` returns (N, C) scores whose argmax is the prediction, e.g.
    `lambda z, t: rebalance(z, t, marginal=m_val)` or `lambda z, t: adjust(z, counts, t)`.
    `taus` defaults to `default_taus()` (0 to 2 in steps of 0.1).

    Returns (best_tau, best_acc, table) with accuracies in percent and table = [(tau, acc), ...]
    in the order of `taus`. Ties (equal numbers of correct samples) go to the smallest |tau|,
    then the smaller tau, so the choice is deterministic and prefers the smallest adjustment.
    """
    logits_val = _check_logits(logits_val, "logits_val")
    targets_val = _check_targets(targets_val, logits_val.shape[0], logits_val.shape[1], "targets_val")
    n = logits_val.shape[0]
    if n == 0:
        raise ValueError("logits_val has no rows: tau cannot be chosen without validation samples")
    taus = default_taus() if taus is None else [float(t) for t in taus]
    if not taus:
        raise ValueError("taus is empty")
    targets_val = targets_val.to(logits_val.device)
    table, best = [], None
    for t in taus:
        scores = fn(logits_val, t)
        if not isinstance(scores, torch.Tensor) or scores.shape != logits_val.shape:
            raise ValueError(f"fn(logits, {t}) must return a tensor of shape {tuple(logits_val.shape)}, "
                             f"got {getattr(scores, 'shape', type(scores))}")
        correct = int((scores.argmax(dim=1) == targets_val).sum())  # integer: ties are exact
        table.append((t, 100.0 * correct / n))
        key = (-correct, abs(t), t)
        if best is None or key < best[0]:
            best = (key, t, 100.0 * correct / n)
    return best[1], best[2], table
