"""Argument checks shared by losses, metrics and post-hoc methods: one place, one wording."""
from __future__ import annotations

import torch


def check_class_vector(values, name: str, num_classes: int | None = None, *, allow_zero: bool = False,
                       hint: str = "") -> torch.Tensor:
    """A per-class vector (counts, a marginal) as float64 on the CPU, or a ValueError naming `name`.

    Entries must be finite and positive (non-negative with `allow_zero`); with `num_classes`,
    there must be exactly one per class.
    """
    kind = "non-negative" if allow_zero else "positive"
    try:
        v = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a 1-D sequence of {kind} numbers, got {values!r}") from exc
    if v.dim() != 1 or v.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence (one entry per class), got shape {tuple(v.shape)}")
    if num_classes is not None and v.numel() != num_classes:
        raise ValueError(f"{name} has {v.numel()} entries but there are {num_classes} classes")
    bad_mask = ~torch.isfinite(v) | ((v < 0) if allow_zero else (v <= 0))
    if bad_mask.any():
        bad = bad_mask.nonzero().flatten()[:5].tolist()
        raise ValueError(f"{name} must all be {kind} and finite; classes {bad} are not{' ' + hint if hint else ''}")
    return v

