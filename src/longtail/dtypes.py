"""The precision that losses, heads and post-hoc scores compute in.

Softmax, log-priors and feature norms lose too many digits in bfloat16/float16 (under autocast the
network's logits arrive in those): they are computed in at least float32. float64 input stays
float64, which the tests use to compare against exact references.
"""
from __future__ import annotations

import torch


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half precisions (and integers), otherwise the dtype itself (float32, float64)."""
    return torch.promote_types(dtype, torch.float32)


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """`t` in working_dtype (the same tensor, uncopied, when it already is)."""
    return t.to(working_dtype(t.dtype))
