"""Evaluation metrics for long-tailed classification (SPEC section 1, "Shot groups").

Functional forms, in the spirit of torchmetrics:

    acc = top1(logits, targets)                       # percent
    res = evaluate(logits, targets, train_counts)     # plain dict, JSON-ready

Shifted test priors (SPEC section 4, test-agnostic protocol)::

    priors = shifted_priors(train_counts)             # {"forward-50": q, ..., "uniform": q, ..., "backward-50": q}
    acc = weighted_accuracy(logits, targets, priors["backward-10"])   # sum_j q_j * acc_j, percent

Units: every accuracy (top-1, per-class, many/medium/few) and the calibration error are
returned in PERCENT (0..100), as long-tail papers report them. Anything undefined (no samples,
a class absent from the targets, an empty shot group) is None in dicts and NaN in tensors;
nothing divides by zero.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from longtail.checks import check_class_vector

__all__ = [
    "top1",
    "per_class_accuracy",
    "shot_groups",
    "group_accuracies",
    "expected_calibration_error",
    "mean_confidence",
    "evaluate",
    "shifted_priors",
    "weighted_accuracy",
]

GROUPS = ("many", "medium", "few")


# ----------------------------------------------------------------------------- input checks

def _check_logits(logits, name: str = "logits") -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"{name} must be a (samples, classes) tensor, got {getattr(logits, 'shape', type(logits))}")
    if not logits.dtype.is_floating_point:
        raise ValueError(f"{name} must be floating point, got dtype {logits.dtype}")
    if logits.shape[1] == 0:
        raise ValueError(f"{name} has no class columns")
    if not torch.isfinite(logits).all():
        raise ValueError(f"{name} contain NaN or inf (diverged model or bad input)")
    return logits


def _check_targets(targets, n: int, num_classes: int | None, name: str = "targets") -> torch.Tensor:
    if not isinstance(targets, torch.Tensor) or targets.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of class indices, got {getattr(targets, 'shape', type(targets))}")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool or targets.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {targets.dtype}")
    if targets.shape[0] != n:
        raise ValueError(f"{name} has {targets.shape[0]} entries but there are {n} predictions (one per sample)")
    if targets.numel() and int(targets.min()) < 0:
        raise ValueError(f"{name} contain a negative label ({int(targets.min())})")
    if num_classes is not None and targets.numel() and int(targets.max()) >= num_classes:
        raise ValueError(f"{name} contain label {int(targets.max())} but there are only {num_classes} classes")
    return targets.long()


def _check_train_counts(train_counts, num_classes: int | None = None) -> torch.Tensor:
    """Training counts as float64 CPU; zeros are allowed here (such a class is simply 'few')."""
    return check_class_vector(train_counts, "train_counts", num_classes, allow_zero=True)


def _as_preds(logits_or_preds, name: str) -> torch.Tensor:
    """(N, C) scores -> argmax labels; (N,) integer labels pass through."""
    if isinstance(logits_or_preds, torch.Tensor) and logits_or_preds.dim() == 2:
        return _check_logits(logits_or_preds, name).argmax(dim=1)
    if not isinstance(logits_or_preds, torch.Tensor) or logits_or_preds.dim() != 1:
        raise ValueError(f"{name} must be (N, C) scores or (N,) predicted labels, "
                         f"got {getattr(logits_or_preds, 'shape', type(logits_or_preds))}")
    if logits_or_preds.dtype.is_floating_point or logits_or_preds.dtype == torch.bool:
        raise ValueError(f"{name} given as 1-D must hold integer labels, got dtype {logits_or_preds.dtype}")
    return logits_or_preds.long()


def _nan_to_none(values: torch.Tensor) -> list:
    return [None if v != v else float(v) for v in values.tolist()]


# ----------------------------------------------------------------------------- functional

def top1(logits_or_preds: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Top-1 accuracy in percent. Accepts (N, C) scores (argmax taken) or (N,) labels.

    None when there are no samples.
    """
    preds = _as_preds(logits_or_preds, "logits_or_preds")
    # with scores the class count is known: a label outside it is bad input, not a miss
    is_scores = isinstance(logits_or_preds, torch.Tensor) and logits_or_preds.dim() == 2
    targets = _check_targets(targets, preds.shape[0], logits_or_preds.shape[1] if is_scores else None)
    if preds.numel() == 0:
        return None
    return 100.0 * (preds == targets.to(preds.device)).sum().item() / preds.numel()


def per_class_accuracy(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy of each class in percent, a float64 (num_classes,) CPU tensor.

    preds may be (N,) labels or (N, C) scores. Classes with no sample in `targets` get NaN
    (their accuracy is undefined, not 0).
    """
    if int(num_classes) <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if isinstance(preds, torch.Tensor) and preds.dim() == 2 and preds.shape[1] != num_classes:
        raise ValueError(f"preds has {preds.shape[1]} columns (class scores) but num_classes is {num_classes}")
    preds = _as_preds(preds, "preds")
    if preds.numel() and (int(preds.min()) < 0 or int(preds.max()) >= num_classes):
        raise ValueError(f"preds must lie in [0, {num_classes}), got range [{int(preds.min())}, {int(preds.max())}]")
    targets = _check_targets(targets, preds.shape[0], num_classes).to(preds.device)
    total = torch.bincount(targets, minlength=num_classes).cpu().double()
    correct = torch.bincount(targets[preds == targets], minlength=num_classes).cpu().double()
    acc = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    present = total > 0
    acc[present] = 100.0 * correct[present] / total[present]
    return acc


def shot_groups(train_counts, many: float = 100, few: float = 20) -> dict[str, torch.Tensor]:
    """Boolean class masks by training count (SPEC): many n > `many`, medium `few` <= n <= `many`,
    few n < `few`. Every class lands in exactly one group."""
    counts = _check_train_counts(train_counts)
    if few > many:
        raise ValueError(f"few ({few}) must not exceed many ({many})")
    return {"many": counts > many, "medium": (counts >= few) & (counts <= many), "few": counts < few}


def group_accuracies(per_class: torch.Tensor, train_counts, many: float = 100, few: float = 20) -> dict[str, float | None]:
    """Mean per-class accuracy (same unit as `per_class`, percent from `per_class_accuracy`) in each
    shot group, over the group's classes that have test samples (non-NaN entries).

    None for a group with no classes, or none with test samples.
    """
    if isinstance(per_class, (list, tuple)):  # evaluate()'s "per_class", None for classes without samples
        per_class = [float("nan") if v is None else v for v in per_class]
    per_class = torch.as_tensor(per_class, dtype=torch.float64).cpu()
    if per_class.dim() != 1:
        raise ValueError(f"per_class must be a 1-D tensor (one accuracy per class), got shape {tuple(per_class.shape)}")
    groups = shot_groups(_check_train_counts(train_counts, per_class.numel()), many, few)
    out: dict[str, float | None] = {}
    for name in GROUPS:
        vals = per_class[groups[name] & ~torch.isnan(per_class)]
        out[name] = float(vals.mean()) if vals.numel() else None
    return out


def _confidences(probs_or_logits: torch.Tensor, from_logits: bool | None) -> torch.Tensor:
    x = _check_logits(probs_or_logits, "probs_or_logits")
    # Probabilities stored in half precision sum to 1 only to about their dtype's epsilon
    # (each entry rounds by up to eps/2 of itself): a fixed 1e-4 took them for logits.
    atol = max(1e-4, 4 * torch.finfo(x.dtype).eps)
    x = x.double()
    if from_logits is None:
        # Auto-detect: rows that are already distributions are probabilities, anything else logits.
        from_logits = not (x.numel() and bool((x >= 0).all() and (x <= 1).all()
                                              and torch.allclose(x.sum(1), torch.ones_like(x[:, 0]), atol=atol)))
    p = F.softmax(x, dim=1) if from_logits else x
    return p


def expected_calibration_error(probs_or_logits: torch.Tensor, targets: torch.Tensor, n_bins: int = 15,
                               from_logits: bool | None = None) -> float | None:
    """Expected calibration error (Guo et al. 2017) in percent, with `n_bins` equal-width bins.

    Confidence c_i = max_j p_ij, prediction argmax_j p_ij; bin b holds c in (b/M, (b+1)/M]
    (M = n_bins); ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|, times 100.
    `from_logits=None` guesses: rows that are non-negative and sum to 1 are taken as
    probabilities, anything else as logits (softmax applied); pass True/False to be explicit.
    None when there are no samples.
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    p = _confidences(probs_or_logits, from_logits)
    targets = _check_targets(targets, p.shape[0], p.shape[1]).to(p.device)
    n = p.shape[0]
    if n == 0:
        return None
    conf, pred = p.max(dim=1)
    correct = (pred == targets).double()
    inner = torch.arange(1, n_bins, dtype=torch.float64, device=p.device) / n_bins
    # right=False: index b with inner[b-1] < c <= inner[b], i.e. bins closed on the right.
    idx = torch.bucketize(conf, inner, right=False)
    sum_conf = torch.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = torch.bincount(idx, weights=correct, minlength=n_bins)
    # sum_b |B_b|/N * |acc_b - conf_b| = sum_b |sum_acc_b - sum_conf_b| / N: no empty-bin division.
    return 100.0 * float((sum_acc - sum_conf).abs().sum() / n)


def mean_confidence(probs_or_logits: torch.Tensor, from_logits: bool | None = None) -> float | None:
    """Mean top-class probability, mean_i max_j p_ij, in percent; None when there are no samples.

    Beside top-1 it says which way a model is miscalibrated (ECE alone does not): above top-1
    is overconfident, below is underconfident. `from_logits` as in `expected_calibration_error`.
    """
    p = _confidences(probs_or_logits, from_logits)
    if p.shape[0] == 0:
        return None
    return 100.0 * float(p.max(dim=1).values.mean())


def evaluate(logits: torch.Tensor, targets: torch.Tensor, train_counts=None, many: float = 100,
             few: float = 20, n_bins: int = 15) -> dict:
    """All metrics at once, as a plain JSON-ready dict:

    {"top1": %, "many": %, "medium": %, "few": %, "ece": %, "confidence": %,
     "per_class": [% or None, ...], "num_samples": int}

    Accuracies, ECE and the mean top-class probability ("confidence") are floats in percent;
    "many"/"medium"/"few" are the mean per-class accuracy over each shot group's classes that
    have test samples (None if none, or if `train_counts` is None); "per_class" has None for classes absent from `targets`; "top1",
    "ece" and "confidence" are None when there are no samples. `logits` may be any scores whose
    argmax is the prediction; ECE and confidence apply softmax to them, so pass real logits if
    they matter.
    """
    logits = _check_logits(logits)
    c = logits.shape[1]
    targets = _check_targets(targets, logits.shape[0], c)
    counts = None if train_counts is None else _check_train_counts(train_counts, c)
    pc = per_class_accuracy(logits, targets, c)
    groups = group_accuracies(pc, counts, many, few) if counts is not None else dict.fromkeys(GROUPS)
    return {
        "top1": top1(logits, targets),
        **groups,
        "ece": expected_calibration_error(logits, targets, n_bins, from_logits=True),
        "confidence": mean_confidence(logits, from_logits=True),
        "per_class": _nan_to_none(pc),
        "num_samples": int(logits.shape[0]),
    }


def _ratio_name(ratio: float) -> str:
    return f"{ratio:g}"  # 50.0 -> "50", 2.5 -> "2.5"


def shifted_priors(class_counts, ratios=(50, 25, 10, 5, 2)) -> dict[str, torch.Tensor]:
    """The shifted test priors of the test-agnostic protocol (SADE, Zhang et al. 2022).

    With r_j the rank of class j in the TRAINING counts (0 = most frequent; equal counts keep
    class-index order) and C classes, forward-R has class sizes n_max * R^(-r_j / (C-1)) and
    backward-R has n_max * R^(-(C-1-r_j) / (C-1)) (the ranks reversed); uniform is 1/C. Each
    prior is returned normalised, q_j = size_j / sum_k size_k (n_max cancels), as a float64
    (C,) CPU tensor summing to 1.

    Keys, in order: "forward-R" for R in `ratios` as given, "uniform", then "backward-R" for R
    in reverse order, so that with descending `ratios` the dict runs from the most head-heavy
    to the most tail-heavy prior. Every ratio must be finite and >= 1 (R = 1 is uniform). With
    a single class every prior is [1].
    """
    counts = check_class_vector(class_counts, "class_counts", allow_zero=True)
    if isinstance(ratios, (int, float)):
        raise ValueError(f"ratios must be a sequence of imbalance factors, e.g. ({ratios},), got a single number")
    ratio_list = []
    for r in ratios:
        try:
            r = float(r)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ratios must be numbers >= 1, got {r!r}") from exc
        if not (r >= 1 and r != float("inf")):  # also rejects NaN
            raise ValueError(f"ratios must be finite and >= 1 (imbalance factors of the test set), got {r}")
        ratio_list.append(r)
    names = [_ratio_name(r) for r in ratio_list]
    if len(set(names)) != len(names):
        raise ValueError(f"ratios contain a repeated value: {list(ratios)}")
    c = counts.numel()
    order = torch.sort(-counts, stable=True).indices  # most frequent first, ties by class index
    rank = torch.empty(c, dtype=torch.float64)
    rank[order] = torch.arange(c, dtype=torch.float64)
    span = max(c - 1, 1)

    def prior(ratio: float, ranks: torch.Tensor) -> torch.Tensor:
        sizes = torch.tensor(ratio, dtype=torch.float64).pow(-ranks / span)
        return sizes / sizes.sum()

    out = {f"forward-{n}": prior(r, rank) for r, n in zip(ratio_list, names)}
    out["uniform"] = torch.full((c,), 1.0 / c, dtype=torch.float64)
    for r, n in zip(reversed(ratio_list), reversed(names)):
        out[f"backward-{n}"] = prior(r, (c - 1) - rank)
    return out


def weighted_accuracy(logits_or_predictions: torch.Tensor, targets: torch.Tensor, prior) -> float:
    """Class-weighted top-1 accuracy in percent: sum_j q_j * acc_j, q = prior / sum(prior).

    acc_j is the accuracy on the samples of class j in `targets`; `logits_or_predictions` is
    (N, C) scores (argmax taken) or (N,) labels, C = len(prior). This is the accuracy expected
    on a test set whose class proportions are q, drawn from the given one (and exactly the
    accuracy of a set in which each class's samples are replicated in proportion q_j / N_j).
    Under a uniform prior it is the mean per-class accuracy. A class of weight 0 may be absent
    from `targets`; a class of positive weight must be present (its accuracy is needed).
    """
    q = check_class_vector(prior, "prior", allow_zero=True)
    if not bool((q > 0).any()):
        raise ValueError("prior is all zeros: it must give each class's weight (at least one positive)")
    c = q.numel()
    if isinstance(logits_or_predictions, torch.Tensor) and logits_or_predictions.dim() == 2 \
            and logits_or_predictions.shape[1] != c:
        raise ValueError(f"logits_or_predictions has {logits_or_predictions.shape[1]} columns but prior has {c} "
                         "entries (one per class)")
    preds = _as_preds(logits_or_predictions, "logits_or_predictions")
    targets = _check_targets(targets, preds.shape[0], c)
    acc = per_class_accuracy(preds, targets, c)
    missing = ((q > 0) & torch.isnan(acc)).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"classes {missing[:5]} have positive weight in prior but no sample in targets: "
                         "give them weight 0 or evaluate on a set that contains them")
    q = q / q.sum()
    used = q > 0
    return float((q[used] * acc[used]).sum())
