"""Host constants made once per device.

A tensor made on a GPU from Python data (``torch.tensor(list, device="cuda")``) or a host tensor
moved there (``.to("cuda")``) is a blocking copy from pageable memory: the host waits for the
device's queue to drain. Done inside a training step, that stalls every step (the first GPU run
found such copies in the augmentation at every batch). These functions make each constant on a device once
and hand back the same tensor afterwards; nothing may write to what they return.
"""
from __future__ import annotations

import torch
from torch import Tensor

_MOVED: dict = {}
_MADE: dict = {}
_LIMIT = 256  # distinct constants are few; a caller making new ones each call must not grow this forever


def on_device(t: Tensor, device: torch.device | str) -> Tensor:
    """``t`` (a module-level host constant) on ``device``, copied there on the first call only."""
    device = torch.device(device)
    if t.device == device:
        return t
    key = (id(t), str(device))
    hit = _MOVED.get(key)
    if hit is None or hit[0] is not t:  # keep t alive with its copy, so its id cannot be reused
        if len(_MOVED) >= _LIMIT:
            _MOVED.clear()
        hit = _MOVED[key] = (t, t.to(device))
    return hit[1]


def constant(values: tuple, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """``torch.tensor(values, dtype=dtype)`` on ``device``, made there on the first call only."""
    device = torch.device(device)
    key = (values, dtype, str(device))
    t = _MADE.get(key)
    if t is None:
        if len(_MADE) >= _LIMIT:
            _MADE.clear()
        t = _MADE[key] = torch.tensor(values, dtype=dtype, device=device)
    return t
