"""Label smoothing (Szegedy et al. 2016) on the adjusted logits of each loss that offers it, against the
standard formula in float64: l_i = (1 - eps) * CE_i + eps * mean_j(-log p_ij), weighted mean by w_{y_i}."""
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from longtail import losses
from longtail.losses import build

S = 30.0
COUNTS = [50.0, 30.0, 12.0, 6.0, 2.0]
SMOOTHED = ["ce", "cb", "la", "bs", "ldam", "ala"]


def adjusted_logits(name, z, y):
    """Each loss's logits before its CE, re-stated from SPEC section 3 in float64."""
    n = torch.tensor(COUNTS, dtype=torch.float64)
    a = z.clone()
    if name == "la":
        a = z + 0.7 * torch.log(n / n.sum())
    elif name == "bs":
        a = z + torch.log(n)
    elif name == "ldam":
        m = n ** -0.25
        m = m * 0.5 / m.max()
        for i in range(len(y)):
            a[i, y[i]] = z[i, y[i]] - S * m[y[i]]
    elif name == "ala":
        qf = math.log(2.0) / torch.log(n / n.min() + 1.0)
        for i in range(len(y)):
            cos_y = z[i, y[i]] / S
            a[i, y[i]] = S * (cos_y - (1.0 - cos_y).detach() / 2.0 * qf[y[i]])
    return a


def class_balanced(beta=0.9999):
    n = torch.tensor(COUNTS, dtype=torch.float64)
    w = (1.0 - beta) / (1.0 - beta ** n)
    return w / w.sum() * len(COUNTS)


def smoothed_loss(a, y, eps, weights=None):
    """sum_i w_{y_i} [(1 - eps)(-log p_{i,y_i}) + eps * mean_j(-log p_ij)] / sum_i w_{y_i}, row by row."""
    c = a.shape[1]
    w = torch.ones(c, dtype=torch.float64) if weights is None else weights
    total, norm = 0.0, 0.0
    for i in range(a.shape[0]):
        neg_log_p = torch.logsumexp(a[i], 0) - a[i]
        total = total + w[y[i]] * ((1.0 - eps) * neg_log_p[y[i]] + eps * neg_log_p.sum() / c)
        norm = norm + w[y[i]]
    return total / norm


def batch(seed=0, b=12):
    gen = torch.Generator().manual_seed(seed)
    cos = torch.rand(b, len(COUNTS), generator=gen, dtype=torch.float64) * 2 - 1
    return (S * cos).requires_grad_(True), torch.randint(0, len(COUNTS), (b,), generator=gen)


def params(name, eps):
    return {"tau": 0.7, "label_smoothing": eps} if name == "la" else {"label_smoothing": eps}


@pytest.mark.parametrize("drw", [False, True])
@pytest.mark.parametrize("eps", [0.1, 0.35])
@pytest.mark.parametrize("name", SMOOTHED)
def test_value_and_gradient_are_the_standard_formula_on_the_adjusted_logits(name, eps, drw):
    z, y = batch(1)
    loss = build(name, COUNTS, **params(name, eps))
    weights = class_balanced() if name == "cb" else None
    if drw:  # DRW on top: each sample's smoothed term weighted by its own class's weight
        weights = torch.tensor([0.5, 0.8, 1.0, 2.0, 3.0], dtype=torch.float64)
        loss.set_class_weights(weights)
    got = loss(z, y)
    want = smoothed_loss(adjusted_logits(name, z, y), y, eps, weights)
    # the losses keep their constants (log priors, margins, weights) in float32: 1e-7 relative
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    got_grad, = torch.autograd.grad(got, z)
    want_grad, = torch.autograd.grad(want, z)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-6, atol=1e-7)


def test_per_sample_terms_carry_their_class_weight():
    z, y = batch(2)
    loss = build("ce", COUNTS, label_smoothing=0.2)
    weights = torch.tensor([2.0, 1.0, 0.5, 4.0, 1.0], dtype=torch.float64)
    loss.set_class_weights(weights)
    per_sample = loss.cross_entropy(z, y, reduction="none")
    want = [weights[y[i]] * smoothed_loss(z[i:i + 1], y[i:i + 1], 0.2) for i in range(len(y))]
    torch.testing.assert_close(per_sample, torch.stack(want), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("drw", [False, True])
@pytest.mark.parametrize("name", ["ce", "cb", "la", "bs"])
def test_without_smoothing_the_losses_are_bit_identical_to_plain_cross_entropy(name, drw):
    gen = torch.Generator().manual_seed(3)
    z = (3 * torch.randn(64, len(COUNTS), generator=gen)).requires_grad_(True)
    y = torch.randint(0, len(COUNTS), (64,), generator=gen)
    loss = build(name, COUNTS, **({"tau": 0.7} if name == "la" else {}))
    if drw:
        loss.set_class_weights([0.5, 0.8, 1.0, 2.0, 3.0])
    assert loss.label_smoothing == 0.0
    # the logits each loss fed F.cross_entropy before label smoothing existed, from its own buffers
    shift = {"la": lambda: loss.tau * loss.log_prior, "bs": lambda: loss.log_counts}.get(name, lambda: 0.0)()
    weight = loss.class_weights if loss.weighted else None
    got = loss(z, y)
    want = F.cross_entropy(z + shift, y, weight=weight)
    assert torch.equal(got, want)
    assert torch.equal(torch.autograd.grad(got, z)[0], torch.autograd.grad(want, z)[0])


def test_only_losses_whose_term_is_cross_entropy_offer_it():
    offering = {name for name, cls in losses.REGISTRY.items() if "label_smoothing" in inspect.signature(cls).parameters}
    # focal's p = exp(-l) and GALA's gradient statistics assume the plain CE term; GCL's second stage is focal
    assert offering == set(SMOOTHED)
    with pytest.raises(ValueError, match="label_smoothing"):
        build("gala", COUNTS, label_smoothing=0.1)


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), "x"])
def test_bad_label_smoothing_raises(bad):
    with pytest.raises(ValueError, match="label_smoothing"):
        build("ce", COUNTS, label_smoothing=bad)
