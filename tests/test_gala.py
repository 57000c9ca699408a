"""GALA loss (SPEC section 3) against independent re-statements of the paper and of the released code."""
from __future__ import annotations

import math
import socket
from datetime import timedelta

import pytest
import torch
import torch.nn.functional as F

from longtail.losses import GALA, build

EPS = 1e-3


def make_batches(num_classes, batch, steps, seed=0, dtype=torch.float32):
    """Random logits/labels; odd steps draw labels from only the first half of the classes."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for t in range(steps):
        z = 3.0 * torch.randn(batch, num_classes, generator=gen, dtype=torch.float64)
        high = num_classes if t % 2 == 0 else max(1, num_classes // 2)
        y = torch.randint(0, high, (batch,), generator=gen)
        out.append((z.to(dtype), y))
    return out


def released_replay(batches, num_classes, lambda1, lambda2, eps=EPS):
    """Straight re-statement of the released code (float64): per-sample loop, running C x C matrix.

    M[j, k] accumulates |dL/dF_ij| over samples i of class k and is never reset; every step the
    cumulative M is added to pos (diagonal) / neg (off-diagonal) totals. theta = pos row sums,
    phi_sample = neg column sums, phi_classifier = neg row sums. Logits: z + lambda1*log(theta+eps)
    - lambda2*log(phi_sample[y]+eps), all entries. Yields (loss, theta, phi_sample, phi_classifier).
    """
    c = num_classes
    M = torch.zeros(c, c, dtype=torch.float64)
    pos = torch.zeros(c, c, dtype=torch.float64)
    neg = torch.zeros(c, c, dtype=torch.float64)
    theta = torch.zeros(c, dtype=torch.float64)
    phi_s = torch.zeros(c, dtype=torch.float64)
    eye = torch.eye(c, dtype=torch.float64)
    for z, y in batches:
        logits = z.double() + lambda1 * torch.log(theta + eps) - lambda2 * torch.log(phi_s[y] + eps).unsqueeze(1)
        leaf = logits.detach().requires_grad_(True)
        loss = F.cross_entropy(leaf, y)
        loss.backward()
        grad = leaf.grad.abs()
        for i in range(len(y)):
            M[:, y[i]] += grad[i]
        pos += M * eye
        neg += M * (1 - eye)
        theta = pos.sum(1)
        phi_s = neg.sum(0)
        yield loss.item(), theta.clone(), phi_s.clone(), neg.sum(1)


def paper_replay(batches, num_classes, lambda1, lambda2, phi_def, eps=EPS):
    """Per-sample float64 restatement of the paper formula with single accumulation."""
    c = num_classes
    theta = torch.zeros(c, dtype=torch.float64)
    phi = torch.zeros(c, dtype=torch.float64)
    for z, y in batches:
        b = len(y)
        d_theta = torch.zeros(c, dtype=torch.float64)
        d_phi = torch.zeros(c, dtype=torch.float64)
        total = 0.0
        for i in range(b):
            k = int(y[i])
            f = z[i].double().clone()
            for j in range(c):
                if j != k:
                    f[j] += lambda1 * math.log(theta[j] + eps) - lambda2 * math.log(phi[k] + eps)
            total += float(torch.logsumexp(f, 0) - f[k])
            g = torch.softmax(f, 0) / b
            g[k] -= 1.0 / b
            d_theta[k] += abs(g[k])
            for j in range(c):
                if j != k:
                    if phi_def == "sample":
                        d_phi[k] += abs(g[j])
                    else:
                        d_phi[j] += abs(g[j])
        theta += d_theta  # applied after the whole batch: one-step lag
        phi += d_phi
        yield total / b, theta.clone(), phi.clone()


def assert_close(actual, expected, rtol, atol=0.0):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64),
                               torch.as_tensor(expected, dtype=torch.float64), rtol=rtol, atol=atol)


def set_stats(loss, seed=1):
    gen = torch.Generator().manual_seed(seed)
    c = loss.num_classes
    loss.theta.copy_(torch.rand(c, generator=gen, dtype=torch.float64) * 5)
    loss.phi.copy_(torch.rand(c, generator=gen, dtype=torch.float64) * 5)


def expected_loss_and_grad(z, y, theta, phi, lambda1, lambda2, mode, weights=None):
    """Independent float64 value and dL/dz for fixed statistics, one row at a time."""
    z = z.double()
    b, c = z.shape
    w = torch.ones(c, dtype=torch.float64) if weights is None else weights.double()
    losses, grads = [], []
    for i in range(b):
        k = int(y[i])
        f = z[i] + lambda1 * torch.log(theta + EPS) - lambda2 * torch.log(phi[k] + EPS)
        if mode == "paper":
            f[k] = z[i, k]
        losses.append(w[k] * (torch.logsumexp(f, 0) - f[k]))
        p = torch.softmax(f, 0)
        p[k] -= 1.0
        grads.append(w[k] * p)  # F = z + constant, so dL/dz = dL/dF
    norm = sum(w[int(k)] for k in y)
    return sum(losses) / norm, torch.stack(grads) / norm


# ---------------------------------------------------------------- replays over several steps
@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-6), (torch.float64, 1e-10)])
def test_reference_mode_replays_released_algorithm(dtype, rtol):
    c, lambda1, lambda2 = 7, 1.2, 0.9
    batches = make_batches(c, 16, 8, seed=3, dtype=dtype)
    assert any(len(set(y.tolist())) < c for _, y in batches)  # some classes absent from some batches
    sample = GALA([1] * c, lambda1, lambda2, mode="reference", phi="sample")
    classifier = GALA([1] * c, lambda1, lambda2, mode="reference", phi="classifier")
    for (z, y), (ref_loss, theta, phi_s, phi_c) in zip(batches, released_replay(batches, c, lambda1, lambda2)):
        assert_close(sample(z, y).item(), ref_loss, rtol=rtol, atol=rtol)
        assert_close(classifier(z, y).item(), ref_loss, rtol=rtol, atol=rtol)
        assert_close(sample.theta, theta, rtol=rtol, atol=1e-12)
        assert_close(sample.phi, phi_s, rtol=rtol, atol=1e-12)
        assert_close(classifier.theta, theta, rtol=rtol, atol=1e-12)
        assert_close(classifier.phi, phi_c, rtol=rtol, atol=1e-12)
    assert int(sample.steps) == len(batches)


@pytest.mark.parametrize("phi_def", ["sample", "classifier"])
def test_paper_mode_replays_per_sample_restatement(phi_def):
    c, lambda1, lambda2 = 6, 1.2, 0.9
    batches = make_batches(c, 12, 6, seed=5)
    loss = GALA([3, 2, 1, 1, 1, 1], lambda1, lambda2, mode="paper", phi=phi_def)
    for (z, y), (ref_loss, theta, phi) in zip(batches, paper_replay(batches, c, lambda1, lambda2, phi_def)):
        assert_close(loss(z, y).item(), ref_loss, rtol=1e-6, atol=1e-6)
        assert_close(loss.theta, theta, rtol=1e-6, atol=1e-12)
        assert_close(loss.phi, phi, rtol=1e-6, atol=1e-12)
    assert torch.all(loss.theta_running == 0)  # single accumulation in paper mode


# ---------------------------------------------------------------- value and gradient
@pytest.mark.parametrize("c,b", [(3, 9), (100, 32), (8142, 4)])
@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_value_and_gradient_match_float64(c, b, mode):
    gen = torch.Generator().manual_seed(c + b)
    loss = GALA(torch.arange(1, c + 1), lambda1=1.2, lambda2=0.9, mode=mode).eval()
    set_stats(loss, seed=c)
    z = (4 * torch.randn(b, c, generator=gen)).requires_grad_(True)
    y = torch.randint(0, c, (b,), generator=gen)
    weights = torch.rand(c, generator=gen) + 0.5
    for w in (None, weights):
        loss.set_class_weights(w)
        z.grad = None
        value = loss(z, y)
        value.backward()
        exp_value, exp_grad = expected_loss_and_grad(z.detach(), y, loss.theta, loss.phi, 1.2, 0.9, mode, w)
        assert value.dtype == torch.float32
        assert_close(value.item(), exp_value, rtol=1e-5, atol=1e-6)
        assert_close(z.grad, exp_grad, rtol=1e-4, atol=2e-7)


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_gradcheck_float64(mode):
    gen = torch.Generator().manual_seed(0)
    loss = GALA([5, 3, 2, 1, 1], mode=mode).eval()  # eval: statistics stay fixed between calls
    set_stats(loss)
    loss.set_class_weights(torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0]))
    z = torch.randn(6, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 4, 2, 2, 1, 3])
    assert loss(z, y).dtype == torch.float64
    assert torch.autograd.gradcheck(lambda x: loss(x, y), (z,))


def test_bf16_autocast_computes_in_float32():
    gen = torch.Generator().manual_seed(0)
    loss = GALA([9, 3, 1, 1]).eval()
    set_stats(loss)
    z = torch.randn(8, 4, generator=gen).to(torch.bfloat16).float()  # exactly representable in bf16
    y = torch.randint(0, 4, (8,), generator=gen)
    plain = loss(z, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss(z, y)
        from_bf16 = loss(z.to(torch.bfloat16), y)
    assert auto.dtype == from_bf16.dtype == torch.float32
    assert auto.item() == plain.item() and from_bf16.item() == plain.item()


# ---------------------------------------------------------------- identities
@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_sample_phi_increment_equals_theta_increment(mode):
    loss = GALA([4, 3, 2, 1, 1], mode=mode, phi="sample")
    for z, y in make_batches(5, 10, 4, seed=7, dtype=torch.float64):
        before = loss.theta.clone(), loss.phi.clone()
        loss(z, y)
        assert_close(loss.phi - before[1], loss.theta - before[0], rtol=1e-12, atol=1e-15)
        assert (loss.theta > before[0]).any()


def test_paper_and_reference_logits_differ_only_at_target():
    paper = GALA([5, 4, 3, 2, 1, 1], lambda2=0.0, mode="paper").eval()
    ref = GALA([5, 4, 3, 2, 1, 1], lambda2=0.0, mode="reference").eval()
    set_stats(paper)
    ref.load_state_dict(paper.state_dict())
    z, y = make_batches(6, 9, 1, seed=2)[0]
    fp, fr = paper.adjusted_logits(z, y), ref.adjusted_logits(z, y)
    target = F.one_hot(y, 6).bool()
    assert_close(fp[target], z[target], rtol=0, atol=1e-5)  # paper: target logit unshifted
    assert torch.equal(fp[~target], fr[~target])
    shift = (1.2 * torch.log(paper.theta + EPS)).float().expand(9, 6)
    assert_close(fr[target], (z + shift)[target], rtol=1e-6, atol=1e-6)  # reference: target shifted too


def test_reference_lambda2_changes_neither_loss_nor_gradient():
    z, y = make_batches(8, 16, 1, seed=4)[0]
    results = []
    for lambda2 in (0.0, 0.9, 3.0):
        loss = GALA([1] * 8, lambda2=lambda2, mode="reference").eval()
        set_stats(loss)
        zz = z.clone().requires_grad_(True)
        full = loss.adjusted_logits(zz, y)  # with the -lambda2*log(phi_k+eps) row term, as released
        value = torch.nn.functional.cross_entropy(full, y)
        value.backward()
        results.append((value.item(), zz.grad, full.detach()))
        # the loss itself leaves the row constant out; same value
        assert_close(loss(z, y).item(), value.item(), rtol=1e-6)
    assert (results[0][2] - results[2][2]).abs().max() > 0.1  # the row term really is in the logits
    for value, grad, _ in results[1:]:
        assert_close(value, results[0][0], rtol=1e-6)
        assert_close(grad, results[0][1], rtol=1e-5, atol=1e-7)
    # ... whereas in paper mode it does change the loss
    paper = [GALA([1] * 8, lambda2=l2, mode="paper").eval() for l2 in (0.0, 0.9)]
    for p in paper:
        set_stats(p)
    assert abs(paper[0](z, y).item() - paper[1](z, y).item()) > 1e-3


def test_no_update_in_eval_mode_and_eval_loss_uses_current_statistics():
    loss = GALA([3, 2, 1, 1])
    batches = make_batches(4, 8, 3, seed=9)
    loss(*batches[0])
    saved = {k: v.clone() for k, v in loss.state_dict().items()}
    loss.eval()
    eval_value = loss(*batches[1])
    for k, v in loss.state_dict().items():
        assert torch.equal(v, saved[k]), k
    loss.train()
    assert loss(*batches[1]).item() == eval_value.item()  # train-mode value uses pre-update statistics
    assert not torch.equal(loss.theta, saved["theta"])


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_state_dict_round_trip_and_resume(mode):
    batches = make_batches(10, 12, 6, seed=11)
    a = GALA(list(range(10, 0, -1)), mode=mode, phi="classifier")
    for z, y in batches[:3]:
        a(z, y)
    state = a.state_dict()
    for key in ("theta", "phi", "theta_running", "phi_running", "steps"):
        assert key in state
    b = build("gala", class_counts=list(range(10, 0, -1)), mode=mode, phi="classifier")
    fresh = build("gala", class_counts=list(range(10, 0, -1)), mode=mode, phi="classifier")
    b.load_state_dict(state)
    for key, value in a.state_dict().items():
        assert torch.equal(getattr(b, key), value), key
    assert b.theta.dtype == torch.float64
    for z, y in batches[3:]:
        va, vb, vf = a(z, y), b(z, y), fresh(z, y)
        assert va.item() == vb.item()
        assert va.item() != vf.item()  # without the restored statistics the loss differs
        assert torch.equal(a.theta, b.theta) and torch.equal(a.phi, b.phi)


def test_one_step_lag_first_step():
    c, l1, l2 = 6, 1.2, 0.9
    z, y = make_batches(c, 10, 1, seed=13)[0]
    ref = GALA([1] * c, l1, l2, mode="reference")
    # all statistics are zero: every logit gets the same shift, so the loss is plain CE on z
    assert_close(ref(z, y).item(), F.cross_entropy(z.double(), y).item(), rtol=1e-6)
    paper = GALA([1] * c, l1, l2, mode="paper")
    shifted = z.double() + (l1 - l2) * math.log(EPS) * (1 - F.one_hot(y, c).double())
    assert_close(paper(z, y).item(), F.cross_entropy(shifted, y).item(), rtol=1e-6)
    # and the statistics now hold exactly this batch's gradient of the CE on those logits
    p = torch.softmax(shifted, 1)
    expected = torch.zeros(c, dtype=torch.float64).index_add_(0, y, (1 - p.gather(1, y[:, None]).squeeze(1)) / 10)
    assert_close(paper.theta, expected, rtol=1e-6, atol=1e-12)


def test_reset_statistics_and_repr():
    loss = GALA([2, 1, 1], mode="reference")
    loss(*make_batches(3, 4, 1)[0])
    assert loss.theta.sum() > 0 and loss.theta_running.sum() > 0
    loss.reset_statistics()
    for key, value in loss.state_dict().items():
        if key != "class_weights":
            assert torch.all(value == 0), key
    text = repr(loss)
    assert "lambda1=1.2" in text and "mode='reference'" in text and "phi='sample'" in text


@pytest.mark.parametrize("kwargs", [dict(mode="papers"), dict(mode=None), dict(phi="classifiers"),
                                    dict(lambda1=-0.1), dict(lambda2=-1), dict(lambda1=float("nan")),
                                    dict(eps=0.0), dict(eps=-1e-3), dict(eps="small")])
def test_bad_parameters_raise(kwargs):
    with pytest.raises(ValueError):
        GALA([3, 2, 1], **kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_logits_raise_before_statistics_change(bad):
    loss = GALA([3, 2, 1, 1])
    z, y = make_batches(4, 6, 1)[0]
    loss(z, y)
    saved = loss.theta.clone(), loss.phi.clone()
    z = z.clone()
    z[2, (int(y[2]) + 1) % 4] = bad  # a non-target entry
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(z, y)
    assert torch.equal(loss.theta, saved[0]) and torch.equal(loss.phi, saved[1])
    with pytest.raises(ValueError, match="columns"):  # shapes are still checked
        loss(z[:, :3].clone(), y)


# ---------------------------------------------------------------- data parallel
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dist_worker(rank, world, port, batches, split, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                           timeout=timedelta(seconds=20))
    try:
        losses = {mode: GALA([1] * 9, mode=mode, phi=phi) for mode, phi in (("paper", "classifier"),
                                                                             ("reference", "sample"))}
        for z, y in batches:
            rows = slice(0, split) if rank == 0 else slice(split, None)  # uneven halves
            for loss in losses.values():
                loss(z[rows], y[rows])
        torch.save({m: (loss.theta, loss.phi) for m, loss in losses.items()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_statistics_match_single_process(tmp_path):
    import torch.multiprocessing as mp

    batches = make_batches(9, 20, 4, seed=17)
    mp.spawn(_dist_worker, args=(2, _free_port(), batches, 12, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for mode, phi in (("paper", "classifier"), ("reference", "sample")):
        single = GALA([1] * 9, mode=mode, phi=phi)
        for z, y in batches:
            single(z, y)
        for idx, name in ((0, "theta"), (1, "phi")):
            assert torch.equal(r0[mode][idx], r1[mode][idx]), (mode, name)
            assert_close(r0[mode][idx], getattr(single, name), rtol=1e-9, atol=0)
