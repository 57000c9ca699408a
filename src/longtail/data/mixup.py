"""Mixup (Zhang et al. 2018) on a batch: x <- lam x + (1 - lam) x[perm], and the loss becomes
lam * loss(z, y) + (1 - lam) * loss(z, y[perm]), lam ~ Beta(alpha, alpha).

lam and perm come from NumPy generators keyed by (seed, epoch, step), so a resumed run mixes
exactly as an uninterrupted one without saving any random state. Under DDP every rank uses the
same lam and permutes its own share of the global batch (keyed by its rank too), so N ranks mix
pairs within shares where one process would pair across the whole batch.
"""
from __future__ import annotations

import numpy as np
import torch


def _draw(batch_size: int, alpha: float, seed: int, epoch: int, step: int, rank: int) -> tuple[float, np.ndarray]:
    if not alpha > 0:
        raise ValueError(f"mixup alpha must be positive, got {alpha}")
    lam = float(np.random.default_rng([seed, epoch, step]).beta(alpha, alpha))
    return lam, np.random.default_rng([seed, epoch, step, 1 + rank]).permutation(batch_size)


def mixup_draw(batch_size: int, alpha: float, seed: int, epoch: int, step: int, rank: int = 0):
    """(lam, perm) for one step; alpha > 0."""
    lam, perm = _draw(batch_size, alpha, seed, epoch, step, rank)
    return lam, torch.from_numpy(perm)


def mixup_epoch(batch_sizes: list[int], alpha: float, seed: int, epoch: int, first_step: int = 0, rank: int = 0,
                device: torch.device | str = "cpu") -> list[tuple[float, torch.Tensor]]:
    """mixup_draw for each step of an epoch from first_step on (a resumed epoch starts mid-way), with
    every permutation moved to the device in one copy: a copy per step from host memory would make
    the host wait for the GPU at every step."""
    draws = [_draw(n, alpha, seed, epoch, first_step + i, rank) for i, n in enumerate(batch_sizes)]
    if not draws:
        return []
    perms = torch.from_numpy(np.concatenate([perm for _, perm in draws])).to(device).split(list(batch_sizes))
    return [(lam, perm) for (lam, _), perm in zip(draws, perms)]


def mix(x: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """lam * x + (1 - lam) * x[perm] (in x's dtype, on x's device)."""
    return x.mul(lam).add_(x[perm.to(x.device)], alpha=1.0 - lam)


def mixed_loss(criterion, logits: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """lam * criterion(logits, y) + (1 - lam) * criterion(logits, y[perm])."""
    from longtail.losses.gala import GALA

    if isinstance(criterion, GALA) and criterion.training:
        # two calls a step would add the batch to GALA's statistics twice (SPEC: one label per image)
        raise ValueError("mixup calls the loss twice per step, and GALA accumulates its gradient statistics on "
                         "every training call: mixup with GALA is not supported")
    return lam * criterion(logits, y) + (1.0 - lam) * criterion(logits, y[perm.to(y.device)])
