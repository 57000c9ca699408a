"""Every loss in SPEC section 3 against an independent float64 computation written from SPEC here."""
import math

import pytest
import torch

from longtail import losses
from longtail.heads import CosineHead
from longtail.losses import (
    ALA,
    GCL,
    LDAM,
    BalancedSoftmax,
    ClassBalancedCE,
    CrossEntropy,
    Focal,
    LogitAdjusted,
    build,
    class_balanced_weights,
)

S = 30.0  # cosine-head scale used throughout
NAMES = ["ce", "focal", "cb", "la", "bs", "ldam", "gcl", "ala"]
COSINE = {"ldam", "gcl", "ala"}


# ----------------------------------------------------------------------------- references (float64, from SPEC)

def ref_softmax_rows(a):
    rows = []
    for i in range(a.shape[0]):
        e = torch.exp(a[i] - a[i].max())
        rows.append(e / e.sum())
    return torch.stack(rows)


def ref_ce_per_sample(a, y):
    out = []
    for i in range(a.shape[0]):
        m = a[i].max()
        out.append(m + torch.log(torch.exp(a[i] - m).sum()) - a[i, int(y[i])])
    return torch.stack(out)


def one_hot(y, c):
    t = torch.zeros(len(y), c, dtype=torch.float64)
    for i, k in enumerate(y.tolist()):
        t[i, k] = 1.0
    return t


def ref_weighted_ce(a, y, w):
    """Value and d/da of sum_i w_{y_i} l_i / sum_i w_{y_i} (PyTorch's weight= convention)."""
    wy = w[y]
    value = (wy * ref_ce_per_sample(a, y)).sum() / wy.sum()
    grad = (ref_softmax_rows(a) - one_hot(y, a.shape[1])) * (wy / wy.sum())[:, None]
    return value, grad


def ref_focal(z, y, w, gamma):
    """LDAM-DRW focal: l_i = w_{y_i} CE_i, p_i = exp(-l_i), mean_i (1 - p_i)^gamma l_i; and d/dz."""
    wy = w[y]
    li = wy * ref_ce_per_sample(z, y)
    q = 1.0 - torch.exp(-li)
    value = (q ** gamma * li).mean()
    # d/dl [(1 - e^-l)^g l] = g (1 - e^-l)^(g-1) e^-l l + (1 - e^-l)^g
    dfdl = gamma * q ** (gamma - 1) * torch.exp(-li) * li + q ** gamma if gamma > 0 else torch.ones_like(li)
    grad = (dfdl * wy / len(y))[:, None] * (ref_softmax_rows(z) - one_hot(y, z.shape[1]))
    return value, grad


def ref_gcl_noise(seed, shape):
    """The released GCL noise: Normal(0, std 1/3) clipped to [-1, 1], drawn as float32 standard normals."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float32) / 3.0).clamp(-1.0, 1.0).double()


def ref_adjusted(name, z, y, n, params, seed=None):
    """Adjusted logits a (float64) for the shift-type losses, straight from SPEC."""
    B, C = z.shape
    a = z.clone()
    if name in ("ce", "cb"):
        return a
    if name == "la":
        tau = params.get("tau", 1.0)
        return z + tau * torch.log(n / n.sum())[None, :]
    if name == "bs":
        return z + torch.log(n)[None, :]
    cos = z / S
    if name == "ldam":
        K = 0.5 * n.min() ** 0.25  # so that max_j K / n_j^(1/4) = 0.5
        for i in range(B):
            k = int(y[i])
            a[i, k] = S * (cos[i, k] - K / n[k] ** 0.25)
        return a
    if name == "gcl":
        eps = ref_gcl_noise(seed, (B, C))
        lmax, lmin = math.log(n.max()), math.log(n.min())
        for j in range(C):
            a[:, j] = S * (cos[:, j] - 0.5 * eps[:, j].abs() * (lmax - math.log(n[j])) / (lmax - lmin))
        return a
    if name == "ala":
        for i in range(B):
            k = int(y[i])
            df = (1.0 - cos[i, k]) / 2.0
            qf = math.log(2.0) / math.log(n[k] / n.min() + 1.0)
            a[i, k] = S * (cos[i, k] - df * qf)
        return a
    raise AssertionError(name)


def make_loss(name, counts, seed=None, **params):
    if name == "gcl":
        params["generator"] = torch.Generator().manual_seed(seed)
    return build(name, counts, **params)


def cb_weights_ref(n, beta):
    w = torch.tensor([(1.0 - beta) / (1.0 - beta ** float(k)) for k in n.tolist()], dtype=torch.float64)
    return w / w.sum() * len(n)


def random_problem(C, B, seed, cosine):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(1, 1000, (C,), generator=g).double()
    n[0], n[-1] = 1000.0, 2.0  # make the imbalance explicit
    if cosine:
        z = (torch.rand(B, C, generator=g, dtype=torch.float64) * 2 - 1) * S
    else:
        z = torch.randn(B, C, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, C, (B,), generator=g)
    return n, z, y


def expected(name, z, y, n, w, seed, params):
    if name == "focal":
        return ref_focal(z, y, w, params.get("gamma", 1.0))
    return ref_weighted_ce(ref_adjusted(name, z, y, n, params, seed), y, w)


# ----------------------------------------------------------------------------- value and gradient

CASES = [("ce", {}), ("focal", {}), ("focal", {"gamma": 0.0}), ("focal", {"gamma": 2.0}), ("focal", {"gamma": 0.5}),
         ("cb", {}), ("la", {}), ("la", {"tau": 1.7}), ("bs", {}), ("ldam", {}), ("gcl", {}), ("ala", {})]


@pytest.mark.parametrize("C,B", [(3, 7), (10, 12), (100, 9), (8142, 16)])
@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}{p}" for n, p in CASES])
def test_value_and_gradient_match_reference(name, params, C, B):
    n, z, y = random_problem(C, B, seed=C + B, cosine=name in COSINE)
    loss = make_loss(name, n.tolist(), seed=11, **params)
    w = cb_weights_ref(n, 0.9999) if name == "cb" else torch.ones(C, dtype=torch.float64)
    zz = z.clone().requires_grad_(True)
    value = loss(zz, y)
    value.backward()
    ref_value, ref_grad = expected(name, z, y, n, w, 11, params)
    assert value.dtype == torch.float64
    torch.testing.assert_close(value.detach(), ref_value, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(zz.grad, ref_grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name,params", CASES, ids=[f"{n}{p}" for n, p in CASES])
def test_drw_weights_match_reference(name, params):
    C, B = 12, 20
    n, z, y = random_problem(C, B, seed=5, cosine=name in COSINE)
    w = torch.rand(C, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3 + 0.1
    loss = make_loss(name, n.tolist(), seed=4, **params)
    loss.set_class_weights(w.float())
    w32 = w.float().double()  # the weights the loss actually holds
    zz = z.clone().requires_grad_(True)
    value = loss(zz, y)
    value.backward()
    ref_value, ref_grad = expected(name, z, y, n, w32, 4, params)
    torch.testing.assert_close(value.detach(), ref_value, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(zz.grad, ref_grad, rtol=1e-5, atol=1e-9)
    # Switching the weights off gives the unweighted loss (for `cb` too: None means no weights).
    loss.set_class_weights(None)
    if name == "gcl":
        loss.generator.manual_seed(4)
    torch.testing.assert_close(loss(z, y), expected(name, z, y, n, torch.ones(C, dtype=torch.float64), 4, params)[0],
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("name,params", [c for c in CASES if c[0] != "ala"],
                         ids=[f"{n}{p}" for n, p in CASES if n != "ala"])
def test_gradcheck_float64(name, params, weighted):
    C, B = 5, 4
    n, z, y = random_problem(C, B, seed=21, cosine=name in COSINE)
    loss = make_loss(name, n.tolist(), seed=0, **params)
    if weighted:
        loss.set_class_weights(torch.linspace(0.5, 2.0, C))

    def f(logits):
        if name == "gcl":  # the same noise on every evaluation
            loss.generator.manual_seed(0)
        return loss(logits, y)

    assert torch.autograd.gradcheck(f, (z.clone().requires_grad_(True),), eps=1e-6, atol=1e-6)


def test_ala_difficulty_factor_is_detached():
    C, B = 6, 5
    n, z, y = random_problem(C, B, seed=8, cosine=True)
    loss = ALA(n.tolist())
    zz = z.clone().requires_grad_(True)
    loss(zz, y).backward()
    # DF detached: d/dz is softmax-CE's gradient at the adjusted logits, the adjustment held fixed.
    _, ref_grad = ref_weighted_ce(ref_adjusted("ala", z, y, n, {}), y, torch.ones(C, dtype=torch.float64))
    torch.testing.assert_close(zz.grad, ref_grad, rtol=1e-6, atol=1e-10)
    # ... which is not the full derivative of the value (it would be if DF carried gradient).
    assert not torch.autograd.gradcheck(lambda t: loss(t, y), (z.clone().requires_grad_(True),),
                                        eps=1e-6, atol=1e-6, raise_exception=False)


# ----------------------------------------------------------------------------- identities

def test_la_with_uniform_counts_equals_ce():
    n, z, y = random_problem(9, 13, seed=1, cosine=False)
    for tau in (1.0, 1.7):
        torch.testing.assert_close(LogitAdjusted([40] * 9, tau=tau)(z, y), CrossEntropy([40] * 9)(z, y))


def test_bs_equals_la_tau_one():
    n, z, y = random_problem(9, 13, seed=2, cosine=False)
    torch.testing.assert_close(BalancedSoftmax(n.tolist())(z, y), LogitAdjusted(n.tolist(), tau=1.0)(z, y))
    assert not torch.allclose(BalancedSoftmax(n.tolist())(z, y), CrossEntropy(n.tolist())(z, y))


def test_ala_without_difficulty_equals_cosine_ce():
    n, z, y = random_problem(7, 10, seed=3, cosine=True)
    z[torch.arange(10), y] = S  # target cos = 1 -> DF = 0
    torch.testing.assert_close(ALA(n.tolist())(z, y), CrossEntropy(n.tolist())(z, y))


def test_ala_without_difficulty_via_cosine_head():
    torch.manual_seed(0)
    head = CosineHead(16, 7, scale=S)
    y = torch.tensor([0, 3, 6, 2, 2, 5])
    features = head.weight.detach()[y] * torch.tensor([0.5, 1.0, 2.0, 3.0, 0.1, 7.0])[:, None]
    z = head(features)
    counts = [500, 200, 90, 40, 12, 5, 2]
    torch.testing.assert_close(ALA(counts)(z, y), CrossEntropy(counts)(z, y), rtol=1e-5, atol=1e-5)


def test_ala_quantity_factor():
    n = torch.tensor([400.0, 100.0, 10.0, 5.0], dtype=torch.float64)
    raw = [1.0 / math.log(k / 5.0 + 1.0) for k in n.tolist()]
    torch.testing.assert_close(ALA(n.tolist()).quantity_factor.double(),
                               torch.tensor(raw, dtype=torch.float64) * math.log(2), rtol=1e-6, atol=0)
    assert ALA(n.tolist()).quantity_factor[-1].item() == pytest.approx(1.0)
    torch.testing.assert_close(ALA(n.tolist(), normalise_qf=False).quantity_factor.double(),
                               torch.tensor(raw, dtype=torch.float64), rtol=1e-6, atol=0)


def test_ldam_margins():
    n = [1000, 300, 50, 7, 16]
    m = LDAM(n).margins.double()
    assert m.max().item() == pytest.approx(0.5) and int(m.argmax()) == 3
    torch.testing.assert_close(m, torch.tensor([0.5 * (7.0 / k) ** 0.25 for k in n], dtype=torch.float64))
    assert LDAM(n, max_margin=0.2).margins.max().item() == pytest.approx(0.2)


def test_cb_weights_formula():
    n = torch.tensor([5000.0, 1000.0, 200.0, 20.0, 3.0], dtype=torch.float64)
    for beta in (0.9, 0.999, 0.9999):
        w = class_balanced_weights(n.tolist(), beta)
        torch.testing.assert_close(w.double(), cb_weights_ref(n, beta), rtol=1e-6, atol=0)
        torch.testing.assert_close(ClassBalancedCE(n.tolist(), beta=beta).class_weights.double(), cb_weights_ref(n, beta),
                                   rtol=1e-6, atol=0)


def test_gcl_noise_statistics():
    loss = GCL([100, 10], generator=torch.Generator().manual_seed(123))
    eps = loss.sample_noise((400_000,)).double()
    sigma = 1.0 / 3.0
    phi3 = math.exp(-4.5) / math.sqrt(2 * math.pi)
    tail3 = 0.5 * math.erfc(3.0 / math.sqrt(2))
    # |eps| = min(|X|, 1), X ~ N(0, sigma^2): E = E|X| - E(|X| - 1)+.
    mean_abs = sigma * math.sqrt(2 / math.pi) - 2 * (sigma * phi3 - tail3)
    assert eps.abs().max().item() <= 1.0
    assert eps.abs().mean().item() == pytest.approx(mean_abs, abs=2e-3)
    assert eps.mean().item() == pytest.approx(0.0, abs=3e-3)
    assert (eps.abs() == 1.0).double().mean().item() == pytest.approx(2 * tail3, abs=5e-4)


def test_gcl_noise_is_fresh_each_call_and_reproducible():
    n, z, y = random_problem(6, 8, seed=9, cosine=True)
    loss = GCL(n.tolist(), generator=torch.Generator().manual_seed(5))
    first, second = loss(z, y), loss(z, y)
    assert first.item() != second.item()
    loss.generator.manual_seed(5)
    assert loss(z, y).item() == first.item()
    # Per-class noise scale (log n_max - log n_j) / (log n_max - log n_min).
    torch.testing.assert_close(loss.noise_scale.double(),
                               (math.log(1000) - torch.log(n)) / (math.log(1000) - math.log(2)), rtol=1e-6, atol=1e-7)


def test_gcl_degenerate_cases_equal_ce():
    n, z, y = random_problem(6, 8, seed=10, cosine=True)
    torch.testing.assert_close(GCL([50] * 6)(z, y), CrossEntropy([50] * 6)(z, y))  # no imbalance, no 0/0
    torch.testing.assert_close(GCL(n.tolist(), noise_mul=0.0)(z, y), CrossEntropy(n.tolist())(z, y))


def test_registry_builds_each_class():
    classes = {"ce": CrossEntropy, "focal": Focal, "cb": ClassBalancedCE, "la": LogitAdjusted, "bs": BalancedSoftmax,
               "ldam": LDAM, "gcl": GCL, "ala": ALA}
    for name, cls in classes.items():
        assert type(build(name, [3, 2, 1])) is cls


def test_state_dict_holds_only_the_class_weights():
    for name in NAMES:
        assert set(build(name, [3, 2, 1]).state_dict()) == {"class_weights"}, name


# ----------------------------------------------------------------------------- low precision

@pytest.mark.parametrize("name", NAMES)
def test_bf16_logits_are_computed_in_float32(name):
    n, z, y = random_problem(50, 16, seed=12, cosine=name in COSINE)
    zb = z.to(torch.bfloat16)
    w = cb_weights_ref(n, 0.9999) if name == "cb" else torch.ones(50, dtype=torch.float64)
    ref = expected(name, zb.double(), y, n, w, 7, {})[0]
    value = make_loss(name, n.tolist(), seed=7)(zb, y)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), ref, rtol=2e-5, atol=2e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = make_loss(name, n.tolist(), seed=7)(zb, y)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), ref, rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise(name):
    loss = build(name, [30, 20, 10])
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    with pytest.raises(ValueError, match="logits"):
        loss(torch.randn(3), y[:3])
    with pytest.raises(ValueError, match="logits has 4 columns"):
        loss(torch.randn(4, 4), y)
    with pytest.raises(ValueError, match="target"):
        loss(z, y[:3])
    with pytest.raises(ValueError, match="target"):
        loss(z, y.float())
    for bad in (-1, 3):
        with pytest.raises(ValueError, match=r"target labels must lie in \[0, 3\)"):
            loss(z, torch.tensor([0, 1, bad, 1]))
    for bad in (float("nan"), float("inf"), -float("inf")):
        zb = z.clone()
        zb[2, 1] = bad
        with pytest.raises(ValueError, match="logits contain NaN or inf"):
            loss(zb, y)
    for counts in ([30, 0, 10], [30, -2, 10], [30, float("nan"), 10], [], [[1, 2], [3, 4]]):
        with pytest.raises(ValueError, match="class_counts"):
            build(name, counts)
    with pytest.raises(ValueError, match="class weights"):
        loss.set_class_weights([1.0, 2.0])


@pytest.mark.parametrize("name,params,word", [
    ("focal", {"gamma": -1.0}, "gamma"), ("focal", {"gamma": float("nan")}, "gamma"),
    ("la", {"tau": float("inf")}, "tau"), ("la", {"tau": float("nan")}, "tau"),
    ("ldam", {"scale": 0.0}, "scale"), ("ldam", {"max_margin": 0.0}, "max_margin"),
    ("ldam", {"max_margin": -0.5}, "max_margin"), ("gcl", {"scale": -1.0}, "scale"),
    ("gcl", {"noise_mul": -0.1}, "noise_mul"), ("gcl", {"generator": 3}, "generator"),
    ("ala", {"scale": 0.0}, "scale"), ("ala", {"scale": float("nan")}, "scale"),
    ("cb", {"beta": 1.0}, "beta"), ("cb", {"beta": -0.1}, "beta"), ("ce", {"gamma": 1.0}, "bad parameters"),
])
def test_bad_hyper_parameters_raise(name, params, word):
    with pytest.raises(ValueError, match=word):
        build(name, [30, 20, 10], **params)


def test_drw_weights_survive_a_state_dict_round_trip():
    counts = [50, 20, 5, 2]
    z, y = torch.randn(12, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3] * 3)
    trained = losses.build("ala", class_counts=counts)
    trained.set_class_weights(losses.class_balanced_weights(counts, 0.999))
    fresh = losses.build("ala", class_counts=counts)
    fresh.load_state_dict(trained.state_dict())
    assert fresh.weighted
    torch.testing.assert_close(fresh(z * 10, y), trained(z * 10, y))
    plain = losses.build("ala", class_counts=counts)
    plain.load_state_dict(losses.build("ala", class_counts=counts).state_dict())
    assert not plain.weighted


@pytest.mark.parametrize("weighted", [False, True])
def test_gcl_second_stage_margin_and_focal_match_a_direct_computation(weighted):
    # GCL's stage two (released cifar_train_classifier.py): s * (cos - noise - m [target]), focal gamma 1, s = 20.
    s, m, gamma = 20.0, 0.1, 1.0
    n, z, y = random_problem(7, 12, seed=21, cosine=True)
    z = z / S * s  # logits of a head with scale 20
    loss = GCL(n.tolist(), scale=s, margin=m, focal_gamma=gamma, generator=torch.Generator().manual_seed(3))
    w = torch.rand(7, generator=torch.Generator().manual_seed(4), dtype=torch.float64) + 0.5
    if weighted:
        loss.set_class_weights(w.float())
    got = loss(z.float(), y)
    # the same noise, drawn again from the same seed, then everything in float64 by hand
    eps = (torch.randn(z.shape, generator=torch.Generator().manual_seed(3)) / 3).clamp(-1, 1).double()
    rel = (math.log(n.max()) - torch.log(n)) / (math.log(n.max()) - math.log(n.min()))
    cos = z / s - 0.5 * eps.abs() * rel
    cos[torch.arange(12), y] -= m
    ce = torch.logsumexp(s * cos, 1) - s * cos[torch.arange(12), y]
    if weighted:
        ce = ce * w[y]
    want = ((1 - torch.exp(-ce)) ** gamma * ce).mean()
    torch.testing.assert_close(got.double(), want, rtol=2e-5, atol=1e-6)
    # the gradient treats the focal weight as a constant (the release detaches p): d/dz of
    # mean_i w_i CE_i(z) with w_i fixed at (1 - p_i)^gamma, in float64 through the same noise
    zz = z.clone().requires_grad_(True)
    loss.generator.manual_seed(3)
    loss(zz, y).backward()
    z64 = z.clone().requires_grad_(True)
    cos64 = z64 / s - 0.5 * eps.abs() * rel
    cos64 = cos64 - m * torch.nn.functional.one_hot(y, 7)
    ce64 = torch.logsumexp(s * cos64, 1) - s * cos64[torch.arange(12), y]
    if weighted:
        ce64 = ce64 * w[y]
    ((1 - torch.exp(-ce64.detach())) ** gamma * ce64).mean().backward()
    torch.testing.assert_close(zz.grad, z64.grad, rtol=1e-4, atol=1e-7)
    # margin 0 and gamma 0 are SPEC's (first-stage) GCL
    plain = GCL(n.tolist(), scale=s, generator=torch.Generator().manual_seed(3))
    explicit = GCL(n.tolist(), scale=s, margin=0.0, focal_gamma=0.0, generator=torch.Generator().manual_seed(3))
    assert plain(z, y).item() == explicit(z, y).item()
    with pytest.raises(ValueError, match="margin must be non-negative"):
        GCL(n.tolist(), margin=-0.1)


ALL = NAMES + ["gala"]


def _fresh(name, counts):
    return make_loss(name, counts, seed=0) if name == "gcl" else build(name, counts)


@pytest.mark.parametrize("name", ALL)
def test_int32_and_uint8_labels_give_the_int64_result(name):
    counts = [30, 20, 10]
    g = torch.Generator().manual_seed(5)
    z = (torch.rand(6, 3, generator=g) * 2 - 1) * S  # within a cosine head's range, for ala/ldam/gcl too
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    want = _fresh(name, counts)(z, y)  # a fresh loss each time: GALA's statistics move with every call
    for dtype in (torch.int32, torch.uint8):
        torch.testing.assert_close(_fresh(name, counts)(z, y.to(dtype)), want, rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_an_empty_batch_is_an_error_not_nan(name):
    loss = build(name, [30, 20, 10])
    with pytest.raises(ValueError, match="the batch is empty"):
        loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_class_weights_must_be_numbers_not_all_zero_and_are_constants():
    loss = build("ce", [30, 20, 10])
    for bad in ([0.0, 0.0, 0.0], "abc", [1.0, None, 2.0]):
        with pytest.raises(ValueError, match="class weights must be 3"):
            loss.set_class_weights(bad)
    w = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    loss.set_class_weights(w)
    z, y = torch.randn(5, 3, requires_grad=True), torch.tensor([0, 1, 2, 2, 1])
    loss(z, y).backward()  # before: the buffer itself required grad and the weighted CE failed
    assert not loss.class_weights.requires_grad and w.grad is None
    torch.testing.assert_close(loss(z, y), torch.nn.functional.cross_entropy(z, y, weight=w.detach()))


def test_gala_statistics_move_only_in_a_training_step():
    g = torch.Generator().manual_seed(2)
    z, y = torch.randn(8, 3, generator=g), torch.tensor([0, 1, 2, 0, 0, 1, 2, 0])
    gala = build("gala", [30, 20, 10], mode="reference")
    with torch.no_grad():  # a validation pass with the criterion left in train mode
        gala(z, y)
    gala.eval()
    gala(z, y)
    assert int(gala.steps) == 0 and gala.theta.abs().sum() == 0 and gala.theta_running.abs().sum() == 0
    gala.train()
    gala(z.requires_grad_(), y)
    assert int(gala.steps) == 1 and gala.theta_running.abs().sum() > 0


@pytest.mark.parametrize("cast", ["bfloat16", "half", "float"])
def test_casting_a_model_that_holds_gala_keeps_its_statistics_in_float64(cast):
    model = torch.nn.ModuleDict({"head": torch.nn.Linear(4, 3), "loss": build("gala", [30, 20, 10])})
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        model["loss"](torch.randn(8, 3, generator=g, requires_grad=True), torch.randint(0, 3, (8,), generator=g))
    before = {k: v.clone() for k, v in model["loss"].state_dict().items() if v.dtype == torch.float64}
    assert set(before) == {"theta", "phi", "theta_running", "phi_running"}
    getattr(model, cast)()
    after = model["loss"].state_dict()
    assert model["head"].weight.dtype == (torch.float16 if cast == "half" else getattr(torch, cast))
    for k, v in before.items():  # not rounded through bf16/fp16 and back: the very same numbers
        assert after[k].dtype == torch.float64 and torch.equal(after[k], v), k


def test_mixup_with_gala_is_refused_in_training_only():
    from longtail.data.mixup import mixed_loss

    gala = build("gala", [30, 20, 10])
    z, y, perm = torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), torch.tensor([1, 0, 3, 2])
    with pytest.raises(ValueError, match="mixup with GALA is not supported"):
        mixed_loss(gala, z, y, 0.6, perm)
    assert int(gala.steps) == 0
    gala.eval()  # evaluating a mixed batch updates nothing, so it is allowed
    torch.testing.assert_close(mixed_loss(gala, z, y, 0.6, perm), 0.6 * gala(z, y) + 0.4 * gala(z, y[perm]))


@pytest.mark.parametrize("name", sorted(COSINE))
def test_cosine_head_losses_refuse_logits_no_cosine_head_of_their_scale_gives(name):
    # the layers' default inits read the global RNG, whose state depends on which tests ran before
    # (in one order the linear logits fell under S): seed it here, leaving it as it was afterwards
    with torch.random.fork_rng():
        torch.manual_seed(4)
        _cosine_head_losses_refuse_wrong_scales(name)


def _cosine_head_losses_refuse_wrong_scales(name):
    g = torch.Generator().manual_seed(4)
    feats, y = torch.randn(6, 8, generator=g) * 10, torch.tensor([0, 1, 2, 0, 1, 2])
    loss = _fresh(name, [30, 20, 10])
    loss(CosineHead(8, 3, scale=S)(feats), y)  # the head of the loss's scale: accepted
    for logits in (torch.nn.Linear(8, 3)(feats) * 10, CosineHead(8, 3, scale=2 * S)(feats)):
        assert logits.abs().max() > S  # a linear layer's logits / a head of twice the scale
        with pytest.raises(ValueError, match=f"beyond the loss's scale {S:g}: this loss expects cos"):
            loss(logits, y)
    unchecked = build(name, [30, 20, 10], check_values=False, **({"generator": torch.Generator()}
                                                                   if name == "gcl" else {}))
    assert torch.isfinite(unchecked(torch.nn.Linear(8, 3)(feats) * 10, y))  # the trainer's fast path: no read-back


def test_gala_statistics_of_one_mode_do_not_load_into_the_other():
    g = torch.Generator().manual_seed(6)
    trained = {}
    for mode in ("paper", "reference"):
        gala = build("gala", [30, 20, 10], mode=mode)
        for _ in range(2):
            gala(torch.randn(8, 3, generator=g, requires_grad=True), torch.randint(0, 3, (8,), generator=g))
        trained[mode] = gala.state_dict()
    for mode, other in (("paper", "reference"), ("reference", "paper")):
        same = build("gala", [30, 20, 10], mode=mode)
        same.load_state_dict(trained[mode])  # the same mode: every statistic restored exactly
        assert all(torch.equal(same.state_dict()[k], v) for k, v in trained[mode].items())
        with pytest.raises(ValueError, match=f"come from mode='{mode}'"):
            build("gala", [30, 20, 10], mode=other).load_state_dict(trained[mode])
    build("gala", [30, 20, 10], mode="reference").load_state_dict(build("gala", [30, 20, 10]).state_dict())  # fresh


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_gala_statistics_of_one_phi_definition_do_not_load_into_the_other(mode):
    g = torch.Generator().manual_seed(7)
    batches = [(torch.randn(8, 4, generator=g), torch.randint(0, 4, (8,), generator=g)) for _ in range(3)]
    trained = {}
    for phi in ("sample", "classifier"):
        gala = build("gala", [40, 30, 20, 10], mode=mode, phi=phi)
        for z, y in batches:
            gala(z.requires_grad_(True), y)
        trained[phi] = gala.state_dict()
        same = build("gala", [40, 30, 20, 10], mode=mode, phi=phi)
        same.load_state_dict(trained[phi])
        assert all(torch.equal(same.state_dict()[k], v) for k, v in trained[phi].items())
    # sample phi always equals theta: classifier statistics, where it does not, are refused
    with pytest.raises(ValueError, match="come from phi='classifier'"):
        build("gala", [40, 30, 20, 10], mode=mode, phi="sample").load_state_dict(trained["classifier"])
    # classifier phi can equal theta (uniform logits on a balanced batch): its own statistics still load
    uniform = build("gala", [40, 30, 20, 10], lambda1=0.0, lambda2=0.0, mode=mode, phi="classifier")
    uniform(torch.zeros(8, 4, requires_grad=True), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    assert torch.allclose(uniform.phi, uniform.theta, rtol=1e-9, atol=0.0)
    build("gala", [40, 30, 20, 10], mode=mode, phi="classifier").load_state_dict(uniform.state_dict())
    build("gala", [40, 30, 20, 10], mode=mode, phi="classifier").load_state_dict(
        build("gala", [40, 30, 20, 10], mode=mode).state_dict())  # fresh statistics load into either
