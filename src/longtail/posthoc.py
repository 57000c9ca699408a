"""Post-hoc adjustments of a trained classifier (SPEC section 4).

- Prediction re-balancing (PR, from the GALA paper): argmax_j z_ij - tau * log s_j, with
  s_j = sum_i softmax(z)_ij over a whole evaluation set.
- Post-hoc logit adjustment: argmax_j z_ij - tau * log pi_j.
- tau-normalisation of classifier weights: w_j / |w_j|^tau.
- `search_tau`: pick tau by validation top-1.
- Correction toward a target prior q: argmax_j z_ij - tau * log pi_j + log q_j (`to_prior`).
- `estimate_prior`: the test prior q estimated from unlabelled predictions by EM.

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

__all__ = ["class_marginal", "rebalance", "adjust", "to_prior", "estimate_prior", "fit_temperature", "tau_normalize",
           "default_taus", "search_tau"]


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


def to_prior(logits: torch.Tensor, class_counts, target_prior, tau: float = 1.0) -> torch.Tensor:
    """Logit adjustment toward a target prior: scores z_ij - tau * log pi_j + log q_j.

    pi = counts / sum(counts) is the training prior, q = target_prior / sum(target_prior) the
    prior the predictions are meant for (every entry positive: its log is taken). With tau = 1
    and softmax(z) calibrated to pi, softmax of the scores is the Bayes posterior under q. With
    q uniform the scores are `adjust(logits, class_counts, tau)` minus the constant log C, so
    the predictions are post-hoc logit adjustment's. Returns a new (N, C) tensor of at least
    float32; only its argmax is meaningful unless tau = 1 and the model is calibrated.
    """
    scores = adjust(logits, class_counts, tau)
    q = _check_positive_vector(target_prior, "target_prior", scores.shape[1])
    log_q = (q / q.sum()).log()
    return scores + log_q.to(scores.dtype).to(scores.device)


def _check_probs(probs) -> torch.Tensor:
    probs = _check_logits(probs, "probs")
    if probs.shape[0] == 0:
        raise ValueError("probs has no rows: the prior cannot be estimated without samples")
    if bool((probs < 0).any()):
        raise ValueError("probs contain negative entries: pass probabilities (softmax of the logits), not logits")
    # Stored probabilities sum to 1 only to about their dtype's epsilon.
    atol = max(1e-4, 4 * torch.finfo(probs.dtype).eps)
    row_sums = probs.to(_wide_dtype(probs)).sum(dim=1)
    bad = ((row_sums - 1).abs() > atol).nonzero().flatten()
    if bad.numel():
        raise ValueError(f"probs rows {bad[:5].tolist()} do not sum to 1: pass probabilities (softmax of the logits)")
    return probs


def _check_sample_weights(weights, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    try:
        w = torch.as_tensor(weights, dtype=torch.float64).detach()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"weights must be a 1-D sequence of non-negative numbers, got {weights!r}") from exc
    if w.dim() != 1 or w.numel() != n:
        raise ValueError(f"weights must have one entry per row of probs ({n}), got shape {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("weights must all be non-negative and finite")
    if not bool((w > 0).any()):
        raise ValueError("weights are all zero: at least one sample must count")
    return w.to(device=device, dtype=dtype)


@torch.no_grad()
def estimate_prior(probs: torch.Tensor, train_prior, weights=None, tol: float = 1e-6,
                   max_iter: int = 1000) -> tuple[torch.Tensor, int]:
    """Estimate the class prior of an unlabelled set by EM (Saerens, Latinne & Decaestecker 2002).

    `probs` (N, C) are posteriors p_ij of a model calibrated to the prior pi = `train_prior`
    (normalised; entries positive). Starting from q^0 = pi, iteration t = 1, 2, ... computes

        E-step: p'_ij = p_ij * q^(t-1)_j / pi_j / sum_k (p_ik * q^(t-1)_k / pi_k)
        M-step: q^t_j = sum_i w_i * p'_ij / sum_i w_i      (w_i = 1 unless `weights` is given)

    and stops after the first iteration with max_j |q^t_j - q^(t-1)_j| < tol, or after
    `max_iter` iterations. `weights` (N,) are non-negative sample weights (an integer weight
    counts a sample that many times: the result equals EM on the set with each row replicated);
    a shifted test set is represented by weighting the balanced test set's samples by their
    class's target weight. Computed in float64 (float32 on MPS) on the device of `probs`.

    Returns (q, iterations): q a float64 CPU (C,) tensor summing to 1, iterations the number
    of EM iterations run (0 if max_iter = 0; equal to max_iter when the tolerance was not
    met, or was met only at the last iteration).
    """
    probs = _check_probs(probs)
    n, c = probs.shape
    tol = float(tol)
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be positive and finite, got {tol}")
    if int(max_iter) != max_iter or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got {max_iter}")
    dt = _wide_dtype(probs)
    pi = _check_positive_vector(train_prior, "train_prior", c)
    pi = (pi / pi.sum()).to(device=probs.device, dtype=dt)
    p = probs.to(dt)
    p = p / p.sum(dim=1, keepdim=True)  # remove the rounding of stored probabilities
    if weights is None:
        w = torch.full((n,), 1.0 / n, dtype=dt, device=probs.device)
    else:
        w = _check_sample_weights(weights, n, probs.device, dt)
        keep = w > 0  # rows of weight 0 do not enter the M-step
        p, w = p[keep], w[keep] / w[keep].sum()
    ratio_base = p / pi  # p_ij / pi_j, fixed across iterations
    q = pi.clone()
    iterations = 0
    for iterations in range(1, int(max_iter) + 1):
        post = ratio_base * q
        post = post / post.sum(dim=1, keepdim=True)
        q_new = w @ post
        delta = float((q_new - q).abs().max())
        q = q_new
        if delta < tol:
            break
    return q.to(device="cpu", dtype=torch.float64), iterations


@torch.no_grad()
def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, low: float = 0.05, high: float = 20.0,
                    steps: int = 60) -> float:
    """Temperature scaling (Guo et al. 2017): the T in [low, high] minimising the mean negative log
    likelihood of softmax(logits / T) on labelled (validation) data, by golden-section search on log T
    (the NLL is unimodal in T); `steps` narrowings leave a bracket 0.618^steps of the start."""
    logits = _check_logits(logits).to(_wide_dtype(logits))
    targets = _check_targets(targets, logits.shape[0], logits.shape[1]).to(logits.device)
    if logits.shape[0] == 0:
        raise ValueError("logits has no rows: a temperature cannot be fitted without samples")

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(logits / math.exp(log_t), targets))

    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    for _ in range(steps):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return math.exp((a + b) / 2)


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
