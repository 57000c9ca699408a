"""SGD as the recipes set it, SAM (Foret et al. 2021; davda54/sam, sam.py) and MaxNorm (Alshammari et al.
2022; ShadeAlsha/LTR-weight-balancing, utils/regularizers.py), each against a float64 re-statement."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from longtail.losses import GALA, CrossEntropy
from longtail.optim import SAM, MaxNorm, build_optimizer, max_norm_, relative_threshold

# ----------------------------------------------------------------------------- a least-squares problem
# loss(W, b) = 1/(2n) sum_i |W x_i + b - t_i|^2, gradient dW = R^T X / n, db = sum_i r_i / n, R = X W^T + b - T


def problem(seed=0, n=8, d=4, k=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    t = torch.randn(n, k, generator=gen, dtype=torch.float64)
    layer = nn.Linear(d, k).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(k, d, generator=gen, dtype=torch.float64))
        layer.bias.copy_(torch.randn(k, generator=gen, dtype=torch.float64))
    return layer, x, t


def model_loss(layer, x, t):
    return 0.5 * ((layer(x) - t) ** 2).sum(1).mean()


def analytic_grad(w, b, x, t):
    r = x @ w.T + b - t
    return r.T @ x / len(x), r.sum(0) / len(x)


def sam_gradient(w, b, x, t, rho, adaptive=False):
    """The gradient at w + e(w): e = rho g / |g| (adaptive: rho w^2 g / |w g|), |.| over (W, b) together."""
    gw, gb = analytic_grad(w, b, x, t)
    if adaptive:
        norm = torch.sqrt(((w * gw) ** 2).sum() + ((b * gb) ** 2).sum())
        ew, eb = rho * w * w * gw / (norm + 1e-12), rho * b * b * gb / (norm + 1e-12)
    else:
        norm = torch.sqrt((gw ** 2).sum() + (gb ** 2).sum())
        ew, eb = rho * gw / (norm + 1e-12), rho * gb / (norm + 1e-12)
    return analytic_grad(w + ew, b + eb, x, t)


def sgd_reference(params, grads, bufs, lr, momentum, nesterov, weight_decay):
    """torch's SGD (dampening 0) written out: d = g + wd w; buf = d, then mom buf + d; step along buf
    (Nesterov: d + mom buf)."""
    out, new_bufs = [], []
    for p, g, buf in zip(params, grads, bufs):
        d = g + weight_decay * p
        if momentum:
            buf = d.clone() if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        out.append(p - lr * d)
        new_bufs.append(buf)
    return out, new_bufs


def sam_two_pass(sam, layer, x, t):
    sam.zero_grad()
    model_loss(layer, x, t).backward()
    sam.first_step()
    model_loss(layer, x, t).backward()
    sam.second_step()


# ----------------------------------------------------------------------------- build_optimizer
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("momentum,nesterov,weight_decay", [(0.0, False, 0.0), (0.9, False, 5e-4), (0.9, True, 2e-4)])
def test_build_optimizer_is_sgd_as_the_recipes_set_it(momentum, nesterov, weight_decay, fused):
    layer, x, t = problem()
    opt = build_optimizer(layer.parameters(), lr=0.1, momentum=momentum, nesterov=nesterov,
                          weight_decay=weight_decay, fused=fused)
    assert opt.defaults["fused"] is (True if fused else None)
    w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    bufs = [None, None]
    for _ in range(3):
        opt.zero_grad()
        model_loss(layer, x, t).backward()
        (w, b), bufs = sgd_reference([w, b], analytic_grad(w, b, x, t), bufs, 0.1, momentum, nesterov, weight_decay)
        opt.step()
        torch.testing.assert_close(layer.weight.detach(), w, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(layer.bias.detach(), b, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- SAM
@pytest.mark.parametrize("adaptive", [False, True])
def test_one_sam_step_is_sgd_with_the_gradient_at_the_ascended_point(adaptive):
    layer, x, t = problem(1)
    rho, lr = 0.3, 0.2
    w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    sam = SAM(torch.optim.SGD(layer.parameters(), lr=lr), rho=rho, adaptive=adaptive)
    sam_two_pass(sam, layer, x, t)
    gw, gb = sam_gradient(w, b, x, t, rho, adaptive)
    torch.testing.assert_close(layer.weight.detach(), w - lr * gw, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(layer.bias.detach(), b - lr * gb, rtol=1e-12, atol=1e-14)
    # the ascent mattered: plain SGD lands elsewhere
    plain_w = w - lr * analytic_grad(w, b, x, t)[0]
    assert not torch.allclose(layer.weight.detach(), plain_w, rtol=1e-6)


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("nesterov", [False, True])
def test_sam_steps_the_base_optimiser_from_w_with_momentum_and_weight_decay(nesterov, adaptive):
    layer, x, t = problem(2)
    rho, lr, mom, wd = 0.1, 0.05, 0.9, 5e-3
    base = build_optimizer(layer.parameters(), lr=lr, momentum=mom, nesterov=nesterov, weight_decay=wd)
    sam = SAM(base, rho=rho, adaptive=adaptive)
    w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    bufs = [None, None]
    for step in range(3):
        if step == 1:  # the closure form takes the same two passes
            sam.step(lambda: model_loss(layer, x, t).backward())
        else:
            sam_two_pass(sam, layer, x, t)
        # weight decay and momentum act at w, on the gradient taken at w + e(w)
        grads = sam_gradient(w, b, x, t, rho, adaptive)
        (w, b), bufs = sgd_reference([w, b], grads, bufs, lr, mom, nesterov, wd)
        torch.testing.assert_close(layer.weight.detach(), w, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(layer.bias.detach(), b, rtol=1e-12, atol=1e-14)


def test_sam_leaves_parameters_without_a_gradient_out_of_the_norm_and_the_step():
    layer, x, t = problem(3)
    unused = nn.Parameter(torch.ones(5, dtype=torch.float64))
    rho, lr = 0.5, 0.1
    sam = SAM(torch.optim.SGD([*layer.parameters(), unused], lr=lr), rho=rho)
    w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    model_loss(layer, x, t).backward()
    sam.first_step()
    assert all(p.grad is None for p in layer.parameters())  # zeroed for the second pass
    gw, gb = analytic_grad(w, b, x, t)
    norm = torch.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    torch.testing.assert_close(layer.weight.detach(), w + rho * gw / norm, rtol=1e-12, atol=1e-14)
    model_loss(layer, x, t).backward()
    sam.second_step()
    assert torch.equal(unused.detach(), torch.ones(5, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="without first_step"):
        model_loss(layer, x, t).backward()
        sam.second_step()


def test_sam_restores_w_exactly_and_its_checkpoint_is_the_base_optimisers():
    layer, x, t = problem(4)
    w = layer.weight.detach().clone()
    sam = SAM(torch.optim.SGD(layer.parameters(), lr=0.0), rho=0.7)
    sam_two_pass(sam, layer, x, t)
    assert torch.equal(layer.weight.detach(), w)  # lr 0: back at w bit for bit

    def run(steps, resume_after=None):
        lay, _, _ = problem(5)
        opt = SAM(build_optimizer(lay.parameters(), lr=0.05, momentum=0.9, nesterov=False, weight_decay=1e-3), 0.2)
        for s in range(steps):
            sam_two_pass(opt, lay, x, t)
            if s == resume_after:
                saved = copy.deepcopy(opt.state_dict())
                assert set(saved["state"][0]) == {"momentum_buffer"}  # the base's state, no saved w
                opt = SAM(build_optimizer(lay.parameters(), lr=0.05, momentum=0.9, nesterov=False,
                                          weight_decay=1e-3), 0.2)
                opt.load_state_dict(saved)
        return lay.weight.detach()

    assert torch.equal(run(4), run(4, resume_after=1))


def test_sam_shares_the_base_optimisers_param_groups_and_refuses_bad_settings():
    layer, _, _ = problem()
    base = torch.optim.SGD(layer.parameters(), lr=0.1)
    sam = SAM(base, rho=0.05)
    for group in sam.param_groups:  # a learning-rate schedule sets the base optimiser's rate
        group["lr"] = 0.01
    assert base.param_groups[0]["lr"] == 0.01 and sam.defaults is base.defaults
    with pytest.raises(ValueError, match="rho"):
        SAM(base, rho=-0.1)


# ----------------------------------------------------------------------------- SAM with GALA
def gala_state(loss):
    return {k: v.clone() for k, v in loss.state_dict().items()}


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_a_sam_step_adds_its_batch_to_galas_statistics_once(mode):
    torch.manual_seed(0)
    counts = [40, 20, 10, 5]
    layer = nn.Linear(6, 4)
    gala = GALA(counts, mode=mode)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):  # statistics that adjust: a few plain steps
        gala(torch.randn(16, 4, generator=gen), torch.randint(0, 4, (16,), generator=gen))
    x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 4, (16,), generator=gen)
    plain = copy.deepcopy(gala)  # the same starting statistics
    sam = SAM(torch.optim.SGD(layer.parameters(), lr=0.1), rho=0.5)
    with gala.frozen():
        gala(layer(x), y).backward()
    sam.first_step()
    at_ascent = layer(x)
    gala(at_ascent, y).backward()
    sam.second_step()
    # one plain training call on the same batch (the second pass's logits) from the same statistics
    plain(at_ascent.detach(), y)
    after, want = gala_state(gala), gala_state(plain)
    assert int(after["steps"]) == 4
    for k in want:
        assert torch.equal(after[k], want[k]), k


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_a_frozen_pass_and_the_next_one_adjust_alike(mode):
    gen = torch.Generator().manual_seed(2)
    gala = GALA([30, 20, 10], mode=mode)
    gala(torch.randn(8, 3, generator=gen), torch.randint(0, 3, (8,), generator=gen))
    z, y = torch.randn(8, 3, generator=gen, requires_grad=True), torch.randint(0, 3, (8,), generator=gen)
    before = gala_state(gala)
    with gala.frozen():
        first = gala(z, y)
    assert all(torch.equal(v, before[k]) for k, v in gala_state(gala).items())
    second = gala(z, y)  # updates, after computing with the same statistics
    grad_first, = torch.autograd.grad(first, z)
    grad_second, = torch.autograd.grad(second, z)
    assert torch.equal(first, second) and torch.equal(grad_first, grad_second)
    assert not torch.equal(gala(z, y), second)  # the statistics moved after the updating pass
    assert gala.updates_state


def test_frozen_is_undone_after_an_error_and_leaves_stateless_losses_alone():
    gala = GALA([3, 2, 1])
    with pytest.raises(ValueError), gala.frozen():
        gala(torch.randn(2, 5), torch.tensor([0, 1]))  # wrong number of classes
    assert gala.updates_state
    ce = CrossEntropy([3, 2, 1])
    z, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    with ce.frozen():
        inside = ce(z, y)
    assert torch.equal(inside, ce(z, y))


# ----------------------------------------------------------------------------- MaxNorm
def released_max_norm(w, thresh):
    """MaxNorm_via_PGD.PGD (tau 1) in numpy float64: rows with L2 norm above thresh scaled by thresh / norm."""
    w = w.copy()
    norms = np.linalg.norm(w.reshape(w.shape[0], -1), ord=2, axis=1)
    idx = norms > thresh
    w[idx] = w[idx] * (thresh / norms[idx]).reshape(-1, *([1] * (w.ndim - 1)))
    return w


@pytest.mark.parametrize("shape", [(10, 7), (6, 3, 2, 2)])
def test_max_norm_scales_rows_above_t_to_t_and_leaves_the_rest(shape):
    gen = np.random.default_rng(0)
    w = gen.normal(size=shape) * gen.uniform(0.2, 3.0, size=(shape[0],) + (1,) * (len(shape) - 1))
    w[0] = 0.0  # a zero row stays zero
    norms = np.linalg.norm(w.reshape(shape[0], -1), axis=1)
    t = float(np.median(norms))
    assert (norms > t).sum() >= 2 and (norms < t).sum() >= 2
    weight = torch.tensor(w)
    max_norm_(weight, t)
    np.testing.assert_allclose(weight.numpy(), released_max_norm(w, t), rtol=1e-14, atol=0)
    got = np.linalg.norm(weight.numpy().reshape(shape[0], -1), axis=1)
    np.testing.assert_allclose(got[norms > t], t, rtol=1e-14)
    assert np.array_equal(weight.numpy()[norms <= t], w[norms <= t])  # untouched, bit for bit


def test_max_norm_threshold_as_released_and_a_step_after_sgd():
    gen = torch.Generator().manual_seed(3)
    head = nn.Linear(5, 8).double()
    with torch.no_grad():
        head.weight.mul_(torch.rand(8, 1, generator=gen, dtype=torch.float64) * 4)
    w = head.weight.detach().numpy().copy()
    norms = np.linalg.norm(w, axis=1)
    want = norms.min() + 0.1 * (norms.max() - norms.min())
    assert relative_threshold(head.weight, 0.1) == pytest.approx(want, rel=1e-14)
    constraint = MaxNorm.relative(head.weight, 0.1)
    bias = head.bias.detach().clone()
    constraint.step()
    np.testing.assert_allclose(head.weight.detach().numpy(), released_max_norm(w, want), rtol=1e-14)
    assert torch.equal(head.bias.detach(), bias)  # the bias is not constrained
    restored = MaxNorm(head.weight, 99.0)
    restored.load_state_dict(constraint.state_dict())
    assert restored.threshold == constraint.threshold


def test_max_norm_refuses_a_bias_and_a_non_positive_threshold():
    head = nn.Linear(3, 4)
    with pytest.raises(ValueError, match="bias is not constrained"):
        MaxNorm(head.bias, 1.0)
    with pytest.raises(ValueError, match="positive"):
        MaxNorm(head.weight, 0.0)
    with pytest.raises(ValueError, match="fraction"):
        MaxNorm.relative(head.weight, 1.5)
