"""Evaluation under shifted test priors: SADE's test-agnostic protocol (SPEC section 4).

A model trained on long-tailed data is evaluated on test sets whose class prior q is not
uniform: forward-R (head-heavy, imbalance R, ordered like the training set), uniform, and
backward-R (tail-heavy, the order reversed), from `metrics.shifted_priors`. For each prior the
table gives the top-1 accuracy of

- ``raw``: the plain argmax of z;
- ``pr``: prediction re-balancing, argmax_j z_ij - tau * log s_j, with the class marginal s and
  tau both taken from the balanced validation set (the honest protocol);
- ``known_prior``: post-hoc logit adjustment moved toward the true test prior,
  argmax_j z_ij - tau * log pi_j + log q_j, tau chosen for `posthoc.adjust` on the balanced
  validation set (the test prior is known, tau is not re-tuned for it);
- ``estimated_prior``: the same with q replaced by its EM estimate (`posthoc.estimate_prior`)
  from the unlabelled test predictions softmax((z - tau * log pi) / T), which fit a uniform prior
  when tau is right, so EM starts from and corrects a uniform train prior. T is the temperature
  (`posthoc.fit_temperature`) that fits the balanced validation set best: EM takes the
  probabilities at their word, and an over-confident model's (a network trained to near-zero
  training loss) drive its estimate toward the extremes; calibrating first is the standard remedy
  (Alexandari et al. 2020).

Every figure is the class-weighted accuracy sum_j q_j * acc_j over the WHOLE balanced test set
(`metrics.weighted_accuracy`), not the accuracy of a subset drawn with the prior's class sizes
as SADE does. The two agree in expectation; the weighted form is deterministic (no draw, no
seed), uses every test image (the tail classes of a backward-50 subset would otherwise rest on
a handful of images of the head classes, or the reverse), and varies less. For the same reason
the EM estimate sees the shifted distribution through sample weights: each test sample counts
in proportion to its class's target weight, which equals in expectation EM on a drawn subset.
The weights use the labels only to represent the shifted test set; the estimate itself uses
the predictions alone.
"""
from __future__ import annotations

import torch

from longtail import posthoc
from longtail.metrics import _check_logits, _check_targets, shifted_priors, weighted_accuracy

__all__ = ["shifted_prior_table", "markdown_shifted_table", "SHIFTED_COLUMNS"]

# Row keys shown by `markdown_shifted_table`, with their column headers, in order.
SHIFTED_COLUMNS = {
    "raw": "raw",
    "pr": "+PR (tau on val)",
    "known_prior": "+LA to known prior",
    "estimated_prior": "+LA to EM-estimated prior",
}


def shifted_prior_table(val_logits: torch.Tensor, val_targets: torch.Tensor, test_logits: torch.Tensor,
                        test_targets: torch.Tensor, class_counts, tau_grid=None,
                        ratios=(50, 25, 10, 5, 2)) -> list[dict]:
    """Class-weighted top-1 (percent) under each shifted test prior, raw and with three corrections.

    `val_*` and `test_*` are logits and labels of balanced validation and test sets (every
    class must occur in the test set); `class_counts` the training counts (all positive);
    `tau_grid` the taus searched on validation (None: `posthoc.default_taus()`); `ratios` the
    imbalance factors of the shifted priors. tau for PR and for logit adjustment is chosen once,
    on validation, and used under every prior.

    Returns one dict per prior, in `shifted_priors` order (forward-50 ... uniform ... backward-50):
    {"prior": name, "raw": %, "pr": %, "known_prior": %, "estimated_prior": %,
     "em_iterations": int, "em_tv": total-variation distance 0.5 * sum_j |q_est_j - q_j|}.
    """
    if val_logits is None or val_targets is None:
        raise ValueError("val_logits and val_targets are required: tau is chosen on the validation set")
    val_logits = _check_logits(val_logits, "val_logits")
    test_logits = _check_logits(test_logits, "test_logits")
    c = test_logits.shape[1]
    if val_logits.shape[1] != c:
        raise ValueError(f"val_logits has {val_logits.shape[1]} columns but test_logits has {c}")
    val_targets = _check_targets(val_targets, val_logits.shape[0], c, "val_targets")
    test_targets = _check_targets(test_targets, test_logits.shape[0], c, "test_targets")
    if val_logits.shape[0] == 0:
        raise ValueError("val_logits has no rows: tau is chosen on the validation set")
    priors = shifted_priors(class_counts, ratios)
    n_counts = priors["uniform"].numel()
    if n_counts != c:
        raise ValueError(f"class_counts has {n_counts} entries but the logits have {c} classes")

    marginal_val = posthoc.class_marginal(val_logits)
    tau_pr, _, _ = posthoc.search_tau(val_logits, val_targets,
                                      lambda z, t: posthoc.rebalance(z, t, marginal=marginal_val), tau_grid)
    tau_la, _, _ = posthoc.search_tau(val_logits, val_targets,
                                      lambda z, t: posthoc.adjust(z, class_counts, t), tau_grid)
    raw_preds = test_logits.argmax(dim=1)
    pr_preds = posthoc.rebalance(test_logits, tau_pr, marginal=marginal_val).argmax(dim=1)
    # EM's input: predictions calibrated to a uniform prior, the adjusted logits (balanced when tau_la is
    # right) divided by the temperature that fits the balanced validation set best (EM trusts the
    # probabilities; an over-confident model's would drive its estimate to the extremes)
    wide = posthoc._wide_dtype(test_logits)
    temperature = posthoc.fit_temperature(posthoc.adjust(val_logits.to(wide), class_counts, tau_la), val_targets)
    test_probs = torch.softmax(posthoc.adjust(test_logits.to(wide), class_counts, tau_la) / temperature, dim=1)
    uniform = torch.ones(c, dtype=torch.float64)
    labels = test_targets.cpu()

    rows = []
    for name, q in priors.items():
        q_est, iterations = posthoc.estimate_prior(test_probs, uniform, weights=q[labels])
        # A class EM drives to exactly 0 (underflow) gets the smallest float64 so its log exists.
        q_est_safe = q_est.clamp_min(torch.finfo(torch.float64).tiny)
        known_preds = posthoc.to_prior(test_logits, class_counts, q, tau_la).argmax(dim=1)
        est_preds = posthoc.to_prior(test_logits, class_counts, q_est_safe, tau_la).argmax(dim=1)
        rows.append({
            "prior": name,
            "raw": weighted_accuracy(raw_preds, test_targets, q),
            "pr": weighted_accuracy(pr_preds, test_targets, q),
            "known_prior": weighted_accuracy(known_preds, test_targets, q),
            "estimated_prior": weighted_accuracy(est_preds, test_targets, q),
            "em_iterations": iterations,
            "temperature": temperature,
            "em_tv": 0.5 * float((q_est - q).abs().sum()),
        })
    return rows


def markdown_shifted_table(rows: list[dict]) -> str:
    """A markdown table of `shifted_prior_table`'s rows: one line per prior, accuracies to two decimals."""
    lines = ["| test prior | " + " | ".join(SHIFTED_COLUMNS.values()) + " |",
             "|---|" + "---|" * len(SHIFTED_COLUMNS)]
    for row in rows:
        cells = ["-" if row.get(k) is None else f"{row[k]:.2f}" for k in SHIFTED_COLUMNS]
        lines.append(f"| {row['prior']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
