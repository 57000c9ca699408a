"""Classifier heads (SPEC section 2) against independent float64 computations."""
import math

import pytest
import torch

from longtail.heads import CosineHead, LinearHead, build_head


def ref_cosine(f, w, scale):
    out = torch.empty(f.shape[0], w.shape[0], dtype=torch.float64)
    for i in range(f.shape[0]):
        for j in range(w.shape[0]):
            dot = sum(float(a) * float(b) for a, b in zip(f[i], w[j]))
            nf = math.sqrt(sum(float(a) ** 2 for a in f[i]))
            nw = math.sqrt(sum(float(b) ** 2 for b in w[j]))
            out[i, j] = scale * dot / (nf * nw)
    return out


@pytest.mark.parametrize("scale", [30.0, 16.0])
def test_cosine_head_is_scaled_cosine(scale):
    torch.manual_seed(0)
    head = CosineHead(8, 5, scale=scale)
    f = torch.randn(6, 8) * 4
    z = head(f)
    assert z.dtype == torch.float32 and z.shape == (6, 5)
    torch.testing.assert_close(z.double(), ref_cosine(f, head.weight.detach(), scale), rtol=1e-5, atol=1e-5)
    assert z.abs().max().item() <= scale * (1 + 1e-6)
    # No bias and invariant to the feature norm.
    assert [name for name, _ in head.named_parameters()] == ["weight"]
    torch.testing.assert_close(head(f * 17.0), z, rtol=1e-5, atol=1e-5)


def test_cosine_head_gradient_matches_reference():
    torch.manual_seed(1)
    head = CosineHead(6, 4)
    f = torch.randn(5, 6, requires_grad=True)
    r = torch.randn(5, 4)
    (head(f) * r).sum().backward()
    w64 = head.weight.detach().double().requires_grad_(True)
    f64 = f.detach().double().requires_grad_(True)
    ref = 30.0 * (f64 / f64.pow(2).sum(1, keepdim=True).sqrt()) @ (w64 / w64.pow(2).sum(1, keepdim=True).sqrt()).t()
    (ref * r.double()).sum().backward()
    torch.testing.assert_close(head.weight.grad.double(), w64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(f.grad.double(), f64.grad, rtol=1e-4, atol=1e-5)


def test_cosine_head_bf16_features_give_float32():
    torch.manual_seed(2)
    head = CosineHead(8, 3)
    f = torch.randn(4, 8).to(torch.bfloat16)
    z = head(f)
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.double(), ref_cosine(f.double(), head.weight.detach(), 30.0), rtol=1e-5, atol=1e-5)


def test_cosine_head_stays_float32_under_autocast():
    # The trainer runs the network under bf16 autocast on GPUs and AMX CPUs; the cosine must not
    # be rounded to bf16 there (a matmul is one of the ops autocast casts down).
    torch.manual_seed(4)
    head = CosineHead(64, 10)
    f = torch.randn(32, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = head(f.to(torch.bfloat16))
    assert z.dtype == torch.float32
    torch.testing.assert_close(z.double(), ref_cosine(f.to(torch.bfloat16).double(), head.weight.detach(), 30.0),
                               rtol=1e-5, atol=1e-5)


def test_linear_head_has_bias():
    torch.manual_seed(3)
    head = LinearHead(7, 4)
    assert head.bias is not None and head.bias.shape == (4,)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
    f = torch.randn(3, 7)
    W, b = head.weight.detach(), head.bias.detach()
    ref = torch.tensor([[sum(float(a) * float(b) for a, b in zip(f[i], W[j])) + float(b[j])
                         for j in range(4)] for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(head(f).double(), ref, rtol=1e-5, atol=1e-5)


def test_build_head():
    lin = build_head("linear", 10, 3)
    assert isinstance(lin, LinearHead) and lin.bias is not None and lin.weight.shape == (3, 10)
    cos = build_head("cosine", 10, 3, scale=16.0)
    assert isinstance(cos, CosineHead) and cos.scale == 16.0 and cos.weight.shape == (3, 10)
    with pytest.raises(ValueError, match="unknown head 'mlp'"):
        build_head("mlp", 10, 3)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale must be a positive finite number"):
            build_head("cosine", 10, 3, scale=bad)
