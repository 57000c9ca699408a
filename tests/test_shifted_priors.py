"""Shifted test priors, prior correction and EM prior estimation (SPEC section 4), each against
an independent numpy / loop computation."""
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from longtail.metrics import shifted_priors, top1, weighted_accuracy
from longtail.posthoc import adjust, default_taus, estimate_prior, fit_temperature, to_prior
from longtail.shifted import markdown_shifted_table, shifted_prior_table

NAMES = ["forward-50", "forward-25", "forward-10", "forward-5", "forward-2", "uniform",
         "backward-2", "backward-5", "backward-10", "backward-25", "backward-50"]


def _np_softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _np_ranks(counts):
    """Rank of each class, most frequent first, ties by class index: by counting, no sort."""
    c = len(counts)
    return [sum(1 for k in range(c) if counts[k] > counts[j] or (counts[k] == counts[j] and k < j))
            for j in range(c)]


def _np_em(p, pi, w, tol, max_iter):
    """Saerens et al. EM re-stated in numpy: returns (q, iterations)."""
    q = pi.copy()
    for t in range(1, max_iter + 1):
        post = p * q[None, :] / pi[None, :]
        post = post / post.sum(1, keepdims=True)
        q_new = (w[:, None] * post).sum(0) / w.sum()
        done = np.abs(q_new - q).max() < tol
        q = q_new
        if done:
            return q, t
    return q, max_iter


def _np_weighted_acc(pred, y, q):
    c = len(q)
    acc = np.array([(pred[y == j] == j).mean() for j in range(c)])
    q = q / q.sum()
    return 100.0 * float((q * acc).sum())


# ----------------------------------------------------------------------------- shifted_priors

def test_shifted_priors_hand_case():
    pri = shifted_priors([100, 50, 10], ratios=(4,))
    assert list(pri) == ["forward-4", "uniform", "backward-4"]
    np.testing.assert_allclose(pri["forward-4"].numpy(), np.array([1, 0.5, 0.25]) / 1.75, rtol=1e-15)
    np.testing.assert_allclose(pri["backward-4"].numpy(), np.array([0.25, 0.5, 1]) / 1.75, rtol=1e-15)
    np.testing.assert_allclose(pri["uniform"].numpy(), np.full(3, 1 / 3), rtol=1e-15)
    for q in pri.values():
        assert q.dtype == torch.float64 and q.shape == (3,)


def test_shifted_priors_default_names_and_sums():
    pri = shifted_priors([500, 100, 20, 5])
    assert list(pri) == NAMES
    for q in pri.values():
        assert q.sum().item() == pytest.approx(1.0, abs=1e-15)
        assert bool((q > 0).all())
    # forward-50: largest / smallest class weight is exactly the ratio
    assert (pri["forward-50"][0] / pri["forward-50"][3]).item() == pytest.approx(50.0, rel=1e-13)
    assert (pri["backward-50"][3] / pri["backward-50"][0]).item() == pytest.approx(50.0, rel=1e-13)


def test_shifted_priors_follow_training_ranks_not_label_order():
    rng = np.random.default_rng(3)
    counts = rng.permutation([640, 320, 160, 80, 40, 20, 10])
    c = len(counts)
    ranks = _np_ranks(list(counts))
    pri = shifted_priors(torch.tensor(counts), ratios=(10, 3))
    for r in (10, 3):
        fwd = np.array([r ** (-ranks[j] / (c - 1)) for j in range(c)])
        bwd = np.array([r ** (-(c - 1 - ranks[j]) / (c - 1)) for j in range(c)])
        np.testing.assert_allclose(pri[f"forward-{r}"].numpy(), fwd / fwd.sum(), rtol=1e-13)
        np.testing.assert_allclose(pri[f"backward-{r}"].numpy(), bwd / bwd.sum(), rtol=1e-13)
        # backward is forward with the ranks reversed: read in rank order, one is the other reversed
        order = np.argsort(ranks)
        np.testing.assert_allclose(pri[f"backward-{r}"].numpy()[order], pri[f"forward-{r}"].numpy()[order][::-1],
                                   rtol=1e-13)
        assert int(pri[f"forward-{r}"].argmax()) == int(np.argmax(counts))
    assert list(pri) == ["forward-10", "forward-3", "uniform", "backward-3", "backward-10"]


def test_shifted_priors_ties_keep_class_order():
    pri = shifted_priors([5, 7, 5, 5], ratios=(8,))
    # ranks: class 1 first, then 0, 2, 3 (ties by index)
    fwd = np.array([8 ** (-1 / 3), 1.0, 8 ** (-2 / 3), 8 ** (-1.0)])
    np.testing.assert_allclose(pri["forward-8"].numpy(), fwd / fwd.sum(), rtol=1e-14)
    assert shifted_priors([3], ratios=(50,))["forward-50"].tolist() == [1.0]


def test_shifted_priors_bad_input():
    for bad in (0.5, float("inf"), float("nan"), "x"):
        with pytest.raises(ValueError, match="ratios"):
            shifted_priors([10, 5], ratios=(bad,))
    with pytest.raises(ValueError, match="ratios"):
        shifted_priors([10, 5], ratios=(10, 10))
    with pytest.raises(ValueError, match="ratios"):
        shifted_priors([10, 5], ratios=10)
    with pytest.raises(ValueError, match="class_counts"):
        shifted_priors([10, -1])


# ----------------------------------------------------------------------------- weighted_accuracy

def test_weighted_accuracy_is_accuracy_of_the_replicated_set():
    rng = np.random.default_rng(0)
    per_class = np.array([6, 4, 5, 3])  # an unbalanced test set
    y = np.repeat(np.arange(4), per_class)
    pred = np.where(rng.random(len(y)) < 0.6, y, rng.integers(0, 4, len(y)))
    k = np.array([5, 3, 2, 1])  # each sample of class j appears k_j times: class sizes n_j = k_j * m_j
    sizes = k * per_class
    rep = np.repeat(np.arange(len(y)), k[y])
    assert np.bincount(y[rep], minlength=4).tolist() == sizes.tolist()
    exact = Fraction(int((pred[rep] == y[rep]).sum()), len(rep)) * 100
    got = weighted_accuracy(torch.tensor(pred), torch.tensor(y), torch.tensor(sizes))
    assert got == pytest.approx(float(exact), abs=1e-12)
    # logits with that argmax give the same
    z = torch.randn(len(y), 4, dtype=torch.float64)
    z[torch.arange(len(y)), torch.tensor(pred)] += 100.0
    assert weighted_accuracy(z, torch.tensor(y), sizes.tolist()) == got


def test_weighted_accuracy_uniform_is_balanced_top1():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(5).repeat_interleave(8)
    z = torch.randn(40, 5, generator=g, dtype=torch.float64)
    z[torch.arange(40), y] += 1.0
    got = weighted_accuracy(z, y, shifted_priors([50, 40, 30, 20, 10])["uniform"])
    pred = z.argmax(1).numpy()
    per_class_mean = 100.0 * np.mean([(pred[y.numpy() == j] == j).mean() for j in range(5)])
    assert got == pytest.approx(per_class_mean, abs=1e-12)
    assert got == pytest.approx(top1(z, y), abs=1e-12)


def test_weighted_accuracy_absent_classes():
    y = torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 1, 1, 1])
    assert weighted_accuracy(pred, y, [1.0, 3.0, 0.0]) == pytest.approx(100 * (0.25 * 0.5 + 0.75 * 1.0))
    with pytest.raises(ValueError, match=r"classes \[2\]"):
        weighted_accuracy(pred, y, [1.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="prior"):
        weighted_accuracy(pred, y, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="prior"):
        weighted_accuracy(pred, y, [1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="logits_or_predictions"):
        weighted_accuracy(torch.zeros(4, 2), y, [1.0, 1.0, 1.0])


# ----------------------------------------------------------------------------- to_prior

def test_to_prior_matches_formula():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(30, 4, generator=g, dtype=torch.float64)
    counts = [400, 100, 25, 5]
    q = [1.0, 2.0, 3.0, 4.0]
    for tau in (0.0, 0.7, 1.0):
        expected = z.numpy() - tau * np.log(np.array(counts) / 530) + np.log(np.array(q) / 10)
        np.testing.assert_allclose(to_prior(z, counts, q, tau).numpy(), expected, rtol=1e-13, atol=1e-13)
    assert to_prior(z.half(), counts, q).dtype == torch.float32
    assert to_prior(z, counts, q).dtype == torch.float64


def test_to_prior_uniform_is_adjust():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(50, 6, generator=g, dtype=torch.float64)
    counts = [300, 200, 100, 50, 20, 10]
    u = shifted_priors(counts)["uniform"]
    got = to_prior(z, counts, u, 0.8)
    np.testing.assert_allclose(got.numpy(), adjust(z, counts, 0.8).numpy() - math.log(6), rtol=1e-13, atol=1e-13)
    assert torch.equal(got.argmax(1), adjust(z, counts, 0.8).argmax(1))
    with pytest.raises(ValueError, match="target_prior"):
        to_prior(z, counts, [1, 1, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="target_prior"):
        to_prior(z, counts, [1, 1, 1])


# ----------------------------------------------------------------------------- estimate_prior

MEANS = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])


def _gaussian_set(sizes, pi, seed):
    """Samples of each class from N(mu_j, I) in exact numbers `sizes`, with their exact posteriors
    under the prior pi: p(j|x) = softmax_j(log pi_j - |x - mu_j|^2 / 2)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(sizes)), sizes)
    x = MEANS[y] + rng.standard_normal((len(y), 2))
    logit = np.log(pi)[None, :] - 0.5 * ((x[:, None, :] - MEANS[None, :, :]) ** 2).sum(-1)
    return _np_softmax(logit), y


def test_estimate_prior_recovers_a_shifted_prior():
    pi = np.array([0.6, 0.3, 0.1])
    q_true = np.array([0.1, 0.3, 0.6])
    p, _ = _gaussian_set((q_true * 4000).astype(int), pi, seed=0)
    q, it = estimate_prior(torch.tensor(p), pi)
    assert q.dtype == torch.float64 and q.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert 0.5 * np.abs(q.numpy() - q_true).sum() < 0.02
    assert 0 < it < 1000
    # and it is the EM iteration as stated: same q and same stopping iteration
    q_ref, it_ref = _np_em(p, pi, np.ones(len(p)), 1e-6, 1000)
    assert it == it_ref
    np.testing.assert_allclose(q.numpy(), q_ref, rtol=1e-10)
    # the naive average of the posteriors is far off: EM did the work
    assert 0.5 * np.abs(p.mean(0) - q_true).sum() > 0.1


def test_estimate_prior_uniform_stays_near_uniform():
    pi = np.array([0.6, 0.3, 0.1])
    p, _ = _gaussian_set([1500, 1500, 1500], pi, seed=1)
    q, it = estimate_prior(torch.tensor(p), torch.tensor(pi))
    assert 0.5 * np.abs(q.numpy() - 1 / 3).sum() < 0.02
    assert it < 1000
    u = np.full(3, 1 / 3)
    pu, _ = _gaussian_set([1500, 1500, 1500], u, seed=1)
    q, _ = estimate_prior(torch.tensor(pu), [1, 1, 1])
    assert 0.5 * np.abs(q.numpy() - u).sum() < 0.02


def test_estimate_prior_tolerance_and_max_iter():
    pi = np.array([0.6, 0.3, 0.1])
    p, _ = _gaussian_set([100, 300, 600], pi, seed=2)
    pt = torch.tensor(p)
    q3, it3 = estimate_prior(pt, pi, max_iter=3)
    assert it3 == 3
    np.testing.assert_allclose(q3.numpy(), _np_em(p, pi, np.ones(len(p)), 1e-6, 3)[0], rtol=1e-12)
    q0, it0 = estimate_prior(pt, pi, max_iter=0)
    assert it0 == 0 and np.allclose(q0.numpy(), pi)
    q_loose, it_loose = estimate_prior(pt, pi, tol=1e-2)
    q_tight, it_tight = estimate_prior(pt, pi, tol=1e-9)
    assert it_loose < it_tight < 1000
    ref_loose, ref_it = _np_em(p, pi, np.ones(len(p)), 1e-2, 1000)
    assert it_loose == ref_it
    np.testing.assert_allclose(q_loose.numpy(), ref_loose, rtol=1e-12)


def test_estimate_prior_weights_equal_replication():
    pi = np.array([0.5, 0.3, 0.2])
    p, _ = _gaussian_set([200, 200, 200], pi, seed=3)
    k = np.random.default_rng(4).integers(0, 4, len(p))  # 0..3 copies of each sample
    q_w, it_w = estimate_prior(torch.tensor(p), pi, weights=torch.tensor(k, dtype=torch.float64))
    q_r, it_r = estimate_prior(torch.tensor(np.repeat(p, k, axis=0)), pi)
    assert it_w == it_r
    np.testing.assert_allclose(q_w.numpy(), q_r.numpy(), rtol=1e-12, atol=1e-15)
    # weights are relative: scaling them changes nothing
    q_s, _ = estimate_prior(torch.tensor(p), pi, weights=2.5 * k)
    np.testing.assert_allclose(q_s.numpy(), q_w.numpy(), rtol=1e-12, atol=1e-15)


def test_estimate_prior_bad_input():
    p = torch.full((4, 3), 1 / 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="probs"):
        estimate_prior(torch.randn(4, 3) * 5, [1, 1, 1])  # logits, not probabilities
    with pytest.raises(ValueError, match="probs"):
        estimate_prior(torch.zeros(0, 3), [1, 1, 1])
    with pytest.raises(ValueError, match="train_prior"):
        estimate_prior(p, [1, 0, 1])
    with pytest.raises(ValueError, match="train_prior"):
        estimate_prior(p, [1, 1])
    with pytest.raises(ValueError, match="weights"):
        estimate_prior(p, [1, 1, 1], weights=[1, -1, 1, 1])
    with pytest.raises(ValueError, match="weights"):
        estimate_prior(p, [1, 1, 1], weights=[1, 1, 1])
    with pytest.raises(ValueError, match="weights"):
        estimate_prior(p, [1, 1, 1], weights=[0, 0, 0, 0])
    with pytest.raises(ValueError, match="tol"):
        estimate_prior(p, [1, 1, 1], tol=0)
    with pytest.raises(ValueError, match="max_iter"):
        estimate_prior(p, [1, 1, 1], max_iter=-1)


# ----------------------------------------------------------------------------- shifted_prior_table

COUNTS = np.array([500, 250, 100, 40, 15, 6])


def _head_biased(per_class, seed):
    """Balanced set of logits of a model biased to the head: calibrated balanced logits plus log pi.

    Scores x_j ~ N(2 [j = y], 1) have log-likelihood ratios 2 x_j - 2, so z = 2 x is the
    log-posterior under a uniform prior (up to a constant) and z + log pi that under pi.
    """
    rng = np.random.default_rng(seed)
    c = len(COUNTS)
    y = np.repeat(np.arange(c), per_class)
    x = rng.standard_normal((len(y), c))
    x[np.arange(len(y)), y] += 2.0
    return 2.0 * x + np.log(COUNTS / COUNTS.sum())[None, :], y


def _np_search_tau(z, y, score):
    best = None
    for t in default_taus():
        correct = int((score(z, t).argmax(1) == y).sum())
        key = (-correct, abs(t), t)
        if best is None or key < best[0]:
            best = (key, t)
    return best[1]


@pytest.fixture(scope="module")
def table_case():
    zv, yv = _head_biased(60, seed=10)
    zt, yt = _head_biased(100, seed=11)
    rows = shifted_prior_table(torch.tensor(zv), torch.tensor(yv), torch.tensor(zt), torch.tensor(yt),
                               COUNTS.tolist(), default_taus())
    return zv, yv, zt, yt, rows


def test_shifted_table_rows_and_raw(table_case):
    zv, yv, zt, yt, rows = table_case
    assert [r["prior"] for r in rows] == NAMES
    assert list(rows[0]) == ["prior", "raw", "pr", "known_prior", "estimated_prior", "em_iterations", "temperature",
                             "em_tv"]
    uni = rows[NAMES.index("uniform")]
    assert uni["raw"] == pytest.approx(100.0 * (zt.argmax(1) == yt).mean(), abs=1e-12)


def test_shifted_table_matches_independent_computation(table_case):
    zv, yv, zt, yt, rows = table_case
    log_pi = np.log(COUNTS / COUNTS.sum())
    # PR: marginal and tau from validation
    log_s = np.log(_np_softmax(zv).sum(0))
    tau_pr = _np_search_tau(zv, yv, lambda z, t: z - t * log_s)
    tau_la = _np_search_tau(zv, yv, lambda z, t: z - t * log_pi)
    pr_pred = (zt - tau_pr * log_s).argmax(1)
    # EM's input is calibrated on validation: the temperature minimising the validation NLL, on a dense grid
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 20001))
    adjusted = zv - tau_la * log_pi
    nll = [-np.log(_np_softmax(adjusted / t)[np.arange(len(yv)), yv]).mean() for t in grid]
    temperature = rows[0]["temperature"]
    assert temperature == pytest.approx(grid[int(np.argmin(nll))], rel=1e-3)
    probs = _np_softmax((zt - tau_la * log_pi) / temperature)
    ranks = _np_ranks(list(COUNTS))
    c = len(COUNTS)
    for row in rows:
        name = row["prior"]
        if name == "uniform":
            q = np.full(c, 1 / c)
        else:
            r = float(name.split("-")[1])
            rk = np.array(ranks) if name.startswith("forward") else (c - 1) - np.array(ranks)
            q = r ** (-rk / (c - 1))
            q = q / q.sum()
        assert row["raw"] == pytest.approx(_np_weighted_acc(zt.argmax(1), yt, q), abs=1e-10)
        assert row["pr"] == pytest.approx(_np_weighted_acc(pr_pred, yt, q), abs=1e-10)
        known = (zt - tau_la * log_pi + np.log(q)).argmax(1)
        assert row["known_prior"] == pytest.approx(_np_weighted_acc(known, yt, q), abs=1e-10)
        q_em, it = _np_em(probs, np.full(c, 1 / c), q[yt], 1e-6, 1000)
        assert row["em_iterations"] == it
        assert row["em_tv"] == pytest.approx(0.5 * np.abs(q_em - q).sum(), abs=1e-8)
        est = (zt - tau_la * log_pi + np.log(q_em)).argmax(1)
        assert row["estimated_prior"] == pytest.approx(_np_weighted_acc(est, yt, q), abs=1e-10)


def test_shifted_table_head_bias_and_corrections(table_case):
    *_, rows = table_case
    by = {r["prior"]: r for r in rows}
    assert by["forward-50"]["raw"] > by["backward-50"]["raw"]
    for col in ("pr", "known_prior", "estimated_prior"):
        assert by["backward-50"][col] > by["backward-50"]["raw"], col
    # calibrated logits: EM's estimate is close to the true prior under every shift (600 test samples)
    assert all(r["em_tv"] < 0.08 for r in rows)
    assert all(r["em_iterations"] < 1000 for r in rows)


def test_markdown_shifted_table(table_case):
    from conftest import markdown_rows

    *_, rows = table_case
    header = "| test prior | raw | +PR (tau on val) | +LA to known prior | +LA to EM-estimated prior |"
    text = markdown_shifted_table(rows)
    assert text.startswith(header + "\n|---|---|---|---|---|\n")
    parsed = markdown_rows(text, header)
    assert [p["test prior"] for p in parsed] == NAMES
    assert parsed[0]["raw"] == f"{rows[0]['raw']:.2f}"
    assert parsed[-1]["+LA to EM-estimated prior"] == f"{rows[-1]['estimated_prior']:.2f}"


def test_shifted_table_bad_input(table_case):
    zv, yv, zt, yt, _ = table_case
    args = (torch.tensor(zt), torch.tensor(yt))
    with pytest.raises(ValueError, match="val_logits"):
        shifted_prior_table(None, None, *args, COUNTS.tolist(), default_taus())
    with pytest.raises(ValueError, match="class_counts"):
        shifted_prior_table(torch.tensor(zv), torch.tensor(yv), *args, COUNTS.tolist()[:-1], default_taus())
    with pytest.raises(ValueError, match="val_logits"):
        shifted_prior_table(torch.tensor(zv[:, :-1]), torch.tensor(yv), *args, COUNTS.tolist(), default_taus())


def test_fit_temperature_recovers_the_temperature_of_overconfident_logits():
    rng = np.random.default_rng(3)
    true_logits = rng.normal(0, 1.5, size=(20000, 5))
    labels = np.array([rng.choice(5, p=p) for p in _np_softmax(true_logits)])  # calibrated: drawn from the softmax
    for t_true in (0.5, 1.0, 3.0):
        t = fit_temperature(torch.tensor(true_logits * t_true), torch.tensor(labels))
        assert t == pytest.approx(t_true, rel=0.05)
    with pytest.raises(ValueError, match="no rows"):
        fit_temperature(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))
