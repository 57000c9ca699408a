"""Post-hoc adjustments (SPEC section 4) against independent numpy / loop computations."""
import math

import numpy as np
import pytest
import torch

from longtail.posthoc import adjust, class_marginal, default_taus, rebalance, search_tau, tau_normalize


def _biased_logits(n=200, c=6, seed=0):
    """Logits of a head-biased classifier: true class gets +2, head classes get a large bias."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    z = torch.randn(n, c, generator=g, dtype=torch.float64)
    z[torch.arange(n), y] += 2.0
    z += torch.linspace(2.0, 0.0, c, dtype=torch.float64)  # class 0 favoured most
    return z, y


def _np_softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_class_marginal_is_softmax_column_sum():
    z, _ = _biased_logits(50, 5)
    zn = z.numpy()
    expected = np.zeros(5)
    for i in range(zn.shape[0]):  # loop, not vectorised, to be independent
        row = np.exp(zn[i] - zn[i].max())
        expected += row / row.sum()
    got = class_marginal(z)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert got.sum().item() == pytest.approx(50.0)
    # float32 input: still the same numbers (computed wide)
    np.testing.assert_allclose(class_marginal(z.float()).numpy(), expected, rtol=1e-6)


def test_class_marginal_stable_for_huge_and_underflowing_logits():
    z, _ = _biased_logits(20, 4)
    shifted = z + 1000.0 * torch.arange(20, dtype=torch.float64)[:, None]  # softmax is row-shift invariant
    np.testing.assert_allclose(class_marginal(shifted).numpy(), class_marginal(z).numpy(), rtol=1e-10)
    # Column 3 so low that exp underflows to 0 in float64: log s_3 must still be exact and finite.
    z2 = z.clone()
    z2[:, 3] = -800.0
    scores = rebalance(z2, 1.0)
    assert torch.isfinite(scores).all()
    zn = z2.numpy()
    log_p3 = [zn[i, 3] - (zn[i].max() + math.log(np.exp(zn[i] - zn[i].max()).sum())) for i in range(20)]
    m = max(log_p3)
    log_s3 = m + math.log(sum(math.exp(v - m) for v in log_p3))
    assert scores[:, 3].numpy() == pytest.approx(zn[:, 3] - log_s3, rel=1e-12)


def test_rebalance_tau_zero_is_plain_argmax():
    z, _ = _biased_logits()
    assert torch.equal(rebalance(z, 0.0).argmax(1), z.argmax(1))
    assert torch.equal(rebalance(z.float(), 0.0), z.float())


@pytest.mark.parametrize("tau", [0.5, 1.0, 1.7])
def test_rebalance_equals_p_over_s_to_the_tau(tau):
    z, _ = _biased_logits()
    p = _np_softmax(z.numpy())
    s = p.sum(0)
    direct = p / s ** tau  # the SPEC's form: argmax_j p_ij / s_j^tau
    got = rebalance(z, tau)
    assert torch.equal(got.argmax(1), torch.from_numpy(direct.argmax(1)))
    # scores equal log(direct) up to the per-row constant logsumexp(z_i)
    lse = np.log(np.exp(z.numpy()).sum(1, keepdims=True))
    np.testing.assert_allclose(got.numpy(), np.log(direct) + lse, rtol=1e-10, atol=1e-10)
    # non-vacuous: re-balancing changes some predictions of this head-biased classifier
    assert (got.argmax(1) != z.argmax(1)).any()


def test_rebalance_transductive_vs_supplied_marginal():
    z_test, _ = _biased_logits(120, 6, seed=1)
    z_val, _ = _biased_logits(60, 6, seed=2)
    m_val = class_marginal(z_val)
    # transductive = supplying the test set's own marginal
    torch.testing.assert_close(rebalance(z_test, 1.3), rebalance(z_test, 1.3, marginal=class_marginal(z_test)))
    honest = rebalance(z_test, 1.3, marginal=m_val)
    np.testing.assert_allclose(honest.numpy(), z_test.numpy() - 1.3 * np.log(m_val.numpy()), rtol=1e-12)
    assert not torch.allclose(honest, rebalance(z_test, 1.3))
    # the marginal's overall scale only shifts rows: same predictions; a list is accepted too
    assert torch.equal(rebalance(z_test, 1.3, marginal=(m_val * 7).tolist()).argmax(1), honest.argmax(1))
    # low-precision input gives at least float32 scores
    assert rebalance(z_test.half(), 1.0, marginal=m_val).dtype == torch.float32


def test_adjust_matches_formula_and_uniform_counts_keep_argmax():
    z, _ = _biased_logits(80, 5, seed=3)
    counts = [500, 200, 50, 10, 3]
    got = adjust(z, counts, 0.8)
    n = np.array(counts, dtype=np.float64)
    np.testing.assert_allclose(got.numpy(), z.numpy() - 0.8 * np.log(n / n.sum()), rtol=1e-12)
    assert (got.argmax(1) != z.argmax(1)).any()
    uniform = adjust(z, [40] * 5, 1.0)
    assert torch.equal(uniform.argmax(1), z.argmax(1))
    torch.testing.assert_close(uniform - z, torch.full_like(z, math.log(5)))


def test_tau_normalize_rows():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(7, 5, generator=g) * torch.linspace(0.1, 3.0, 7)[:, None]
    w[2] = 0.0  # an all-zero row must stay zero, not NaN
    before = w.clone()
    unit = tau_normalize(w, 1.0)
    norms = unit.norm(dim=1)
    assert torch.allclose(norms[[0, 1, 3, 4, 5, 6]], torch.ones(6), atol=1e-6)
    assert torch.equal(unit[2], torch.zeros(5))
    assert torch.equal(tau_normalize(w, 0.0), w)
    wn = w.double().numpy()
    for tau in (0.5, 2.0):
        expected = np.stack([row / (np.sqrt((row ** 2).sum()) ** tau) if row.any() else row for row in wn])
        np.testing.assert_allclose(tau_normalize(w, tau).double().numpy(), expected, rtol=1e-6)
    assert torch.equal(w, before)  # input untouched
    p = torch.nn.Parameter(w.clone())
    out = tau_normalize(p, 1.0)
    assert not out.requires_grad and out.dtype == w.dtype
    for bad in (-0.1, 2.01, float("nan")):
        with pytest.raises(ValueError, match="tau"):
            tau_normalize(w, bad)


def test_default_taus_grid():
    taus = default_taus()
    assert len(taus) == 21 and taus[0] == 0.0 and taus[-1] == 2.0
    assert taus[3] == 0.3 and taus[17] == 1.7  # no float drift
    assert default_taus(0.5, 1.0, 0.25) == [0.5, 0.75, 1.0]


def test_search_tau_matches_brute_force():
    z_val, y_val = _biased_logits(300, 8, seed=5)
    m_val = class_marginal(z_val)
    taus = default_taus(0.0, 2.0, 0.1)
    best_tau, best_acc, table = search_tau(z_val, y_val, lambda z, t: rebalance(z, t, marginal=m_val), taus)
    # brute force in numpy: accuracy per tau, first maximum in order of |tau| (taus ascending, >= 0)
    p = _np_softmax(z_val.numpy())
    s = p.sum(0)
    accs = [100.0 * ((p / s ** t).argmax(1) == y_val.numpy()).mean() for t in taus]
    best_i = int(np.argmax(accs))
    assert [t for t, _ in table] == taus
    np.testing.assert_allclose([a for _, a in table], accs)
    assert best_tau == taus[best_i] and best_acc == pytest.approx(accs[best_i])
    assert best_acc > accs[0]  # re-balancing helps this head-biased classifier


def test_search_tau_ties_go_to_smallest_abs_tau():
    z, y = _biased_logits(30, 4, seed=6)
    best_tau, best_acc, table = search_tau(z, y, lambda s, t: s, [1.0, -0.5, 0.5, 0.2, -0.2, 0.9])
    assert best_tau == -0.2
    assert len({a for _, a in table}) == 1 and best_acc == table[0][1]
    # adjust works through the same interface
    counts = [100, 30, 10, 3]
    tau, acc, _ = search_tau(z, y, lambda s, t: adjust(s, counts, t))
    expected = max(100.0 * (adjust(z, counts, t).argmax(1) == y).double().mean().item() for t in default_taus())
    assert acc == pytest.approx(expected)


def test_bad_inputs_name_the_argument():
    z, y = _biased_logits(10, 3)
    with pytest.raises(ValueError, match="marginal"):
        rebalance(z, 1.0, marginal=[1.0, 2.0])
    with pytest.raises(ValueError, match="marginal"):
        rebalance(z, 1.0, marginal=[1.0, -1.0, 2.0])
    bad = z.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="logits"):
        rebalance(bad, 1.0)
    with pytest.raises(ValueError, match="logits"):
        class_marginal(z[0])
    with pytest.raises(ValueError, match="class_counts"):
        adjust(z, [5, 0, 3], 1.0)
    with pytest.raises(ValueError, match="class_counts"):
        adjust(z, [5, 3], 1.0)
    with pytest.raises(ValueError, match="targets_val"):
        search_tau(z, y[:5], lambda s, t: s)
    with pytest.raises(ValueError, match="targets_val"):
        search_tau(z, torch.full((10,), 3), lambda s, t: s)
    with pytest.raises(ValueError, match="fn"):
        search_tau(z, y, lambda s, t: s[:, :2])
    with pytest.raises(ValueError, match="tau"):
        rebalance(z, float("inf"))


def test_rebalance_accepts_an_underflowed_validation_marginal():
    # a very confident model: some classes get softmax mass below the smallest float64
    z_val = torch.tensor([[0.0, 900.0, -900.0], [0.0, 900.0, 5.0]], dtype=torch.float64)
    m = class_marginal(z_val)
    assert m[0] == 0 and m[2] == 0
    z_test = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    scores = rebalance(z_test, 1.0, marginal=m)
    tiny_log = math.log(torch.finfo(torch.float64).tiny)
    assert torch.allclose(scores, z_test - torch.tensor([tiny_log, math.log(float(m[1])), tiny_log],
                                                        dtype=torch.float64))
    with pytest.raises(ValueError, match="marginal"):
        rebalance(z_test, 1.0, marginal=torch.tensor([-1.0, 1.0, 1.0]))
    # an underflowed class's score rises (by -tau * log(tiny), about 708 tau): nothing predicted it
    assert scores[0, 0] > z_test[0, 0] + 700 and scores[0, 2] > z_test[0, 2] + 700
    with pytest.raises(ValueError, match="marginal is all zeros"):  # no class share at all: not a marginal
        rebalance(z_test, 1.0, marginal=torch.zeros(3))
