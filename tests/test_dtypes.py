import pytest
import torch

from longtail import losses, posthoc
from longtail.dtypes import at_least_float32, working_dtype
from longtail.heads import CosineHead


@pytest.mark.parametrize("given, expected", [(torch.bfloat16, torch.float32), (torch.float16, torch.float32),
                                             (torch.float32, torch.float32), (torch.float64, torch.float64),
                                             (torch.int64, torch.float32)])
def test_working_dtype_is_at_least_float32(given, expected):
    assert working_dtype(given) == expected
    t = torch.ones(3, dtype=given)
    assert at_least_float32(t).dtype == expected


def test_a_float32_tensor_is_not_copied():
    t = torch.randn(4)
    assert at_least_float32(t) is t


def test_losses_heads_and_posthoc_compute_half_precision_input_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(8, 5) * 3
    target = torch.randint(0, 5, (8,))
    counts = [40, 20, 10, 5, 2]
    for name in ("ce", "la", "gala", "ala", "ldam"):
        loss = losses.build(name, class_counts=counts).eval()
        half = loss(logits.bfloat16(), target)
        assert half.dtype == torch.float32
        # the same as the float32 loss of the bf16-rounded logits: nothing else is lost
        torch.testing.assert_close(half, loss(logits.bfloat16().float(), target))
    head = CosineHead(6, 5, scale=30.0)
    feats = torch.randn(8, 6)
    assert head(feats.bfloat16()).dtype == torch.float32
    assert posthoc.rebalance(logits.bfloat16(), 1.0).dtype == torch.float32
