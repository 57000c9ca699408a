"""Mixup (Zhang et al. 2018) on a batch: x <- lam x + (1 - lam) x[perm], and the loss becomes
lam * loss(z, y) + (1 - lam) * loss(z, y[perm]), lam ~ Beta(alpha, alpha).

lam and perm come from NumPy generators keyed by (seed, epoch, step), so a resumed run mixes
exactly as an uninterrupted one without saving any random state. Under DDP every rank uses the
same lam and permutes its own share of the global batch (keyed by its rank too), so N ranks mix
pairs within shares where one process would pair across the whole batch.

CutMix (Yun et al. 2019), below, is keyed the same way: per step a skip test, lam, one box for the
whole batch (the same on every rank) and each rank's own permutation; its loss is `mixed_loss` with
the lam of the box's actual area.
"""
from __future__ import annotations

from typing import NamedTuple

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
    """lam * criterion(logits, y) + (1 - lam) * criterion(logits, y[perm]) (mixup and CutMix)."""
    from longtail.losses.gala import GALA

    if isinstance(criterion, GALA) and criterion.training:
        # two calls a step would add the batch to GALA's statistics twice (SPEC: one label per image)
        raise ValueError("mixup and CutMix call the loss twice per step, and GALA accumulates its gradient "
                         "statistics on every training call: mixup with GALA is not supported, nor CutMix")
    return lam * criterion(logits, y) + (1.0 - lam) * criterion(logits, y[perm.to(y.device)])


# ----------------------------------------------------------------------------- CutMix
# CutMix (Yun et al. 2019): with probability `prob` a step pastes one box of a shuffled partner into
# every image, lam ~ Beta(alpha, alpha) sets the box's size, and the loss is mixed by the box's actual
# area. Keyed like mixup; the tag keeps CutMix's draws apart from mixup's (a SeedSequence key with a
# trailing 0 equals the key without it, so a distinct non-zero tag is needed).
CUTMIX_TAG = 0x6375746D  # "cutm"


class CutMixDraw(NamedTuple):
    """One step's CutMix: the box (top, left, bottom, right; rows [top, bottom), columns [left, right)),
    the partner of each image, and lam = 1 - box area / image area, the weight of the image's own label."""
    lam: float
    box: tuple[int, int, int, int]
    perm: torch.Tensor


def released_box(height: int, width: int, lam: float, centre_row: int, centre_col: int) -> tuple[int, int, int, int]:
    """The released rand_bbox (clovaai/CutMix-PyTorch, train.py): sides int(side * sqrt(1 - lam)), the box
    spans centre -/+ half of each (floored), clipped at the borders, so its area can fall short of 1 - lam."""
    cut_ratio = np.sqrt(1.0 - lam)
    half_rows, half_cols = int(height * cut_ratio) // 2, int(width * cut_ratio) // 2
    top, bottom = np.clip([centre_row - half_rows, centre_row + half_rows], 0, height)
    left, right = np.clip([centre_col - half_cols, centre_col + half_cols], 0, width)
    return int(top), int(left), int(bottom), int(right)


def box_lam(box: tuple[int, int, int, int], height: int, width: int) -> float:
    """1 - box area / image area: the share of the image's own pixels (the released lam adjustment)."""
    top, left, bottom, right = box
    return 1.0 - (bottom - top) * (right - left) / (height * width)


def _cutmix_box(alpha: float, prob: float, seed: int, epoch: int, step: int, height: int,
                width: int) -> tuple[int, int, int, int] | None:
    """The step's box, or None when the step is skipped; the same on every rank. The draws come in the
    released order: the skip test, lam, then the centre (row, column), each uniform."""
    gen = np.random.default_rng([seed, epoch, step, CUTMIX_TAG])
    if not gen.random() < prob:
        return None
    lam = float(gen.beta(alpha, alpha))
    return released_box(height, width, lam, int(gen.integers(height)), int(gen.integers(width)))


def _cutmix_perm(batch_size: int, seed: int, epoch: int, step: int, rank: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, step, CUTMIX_TAG, 1 + rank]).permutation(batch_size)


def _check_cutmix(alpha: float, prob: float, height: int, width: int) -> None:
    if not alpha > 0:
        raise ValueError(f"cutmix alpha must be positive, got {alpha}")
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"cutmix prob must lie in [0, 1] (the released CIFAR setting is 0.5), got {prob}")
    if height < 1 or width < 1:
        raise ValueError(f"cutmix needs the image size, got height {height} and width {width}")


def cutmix_draw(batch_size: int, alpha: float, prob: float, seed: int, epoch: int, step: int, rank: int = 0, *,
                height: int, width: int) -> CutMixDraw | None:
    """One step's CutMixDraw, or None for a step CutMix skips (the plain loss applies there)."""
    _check_cutmix(alpha, prob, height, width)
    box = _cutmix_box(alpha, prob, seed, epoch, step, height, width)
    if box is None:
        return None
    perm = torch.from_numpy(_cutmix_perm(batch_size, seed, epoch, step, rank))
    return CutMixDraw(box_lam(box, height, width), box, perm)


def cutmix_epoch(batch_sizes: list[int], alpha: float, prob: float, seed: int, epoch: int, first_step: int = 0,
                 rank: int = 0, device: torch.device | str = "cpu", *, height: int,
                 width: int) -> list[CutMixDraw | None]:
    """cutmix_draw for each step of an epoch from first_step on, the permutations moved to the device in
    one copy (as mixup_epoch). Under DDP every rank draws the same boxes and skips and permutes its own share."""
    _check_cutmix(alpha, prob, height, width)
    steps = range(first_step, first_step + len(batch_sizes))
    boxes = [_cutmix_box(alpha, prob, seed, epoch, step, height, width) for step in steps]
    sizes_cut = [n for n, box in zip(batch_sizes, boxes) if box is not None]
    if not sizes_cut:
        return [None] * len(boxes)
    perms = [_cutmix_perm(n, seed, epoch, step, rank)
             for n, step, box in zip(batch_sizes, steps, boxes) if box is not None]
    on_device = iter(torch.from_numpy(np.concatenate(perms)).to(device).split(sizes_cut))
    return [None if box is None else CutMixDraw(box_lam(box, height, width), box, next(on_device)) for box in boxes]


def cut(x: torch.Tensor, box: tuple[int, int, int, int], perm: torch.Tensor) -> torch.Tensor:
    """x with the box of every image (its last two dimensions) replaced by the same box of its partner
    x[perm]; a new tensor, x is left as it is."""
    top, left, bottom, right = box
    out = x.clone()
    out[..., top:bottom, left:right] = x[perm.to(x.device), ..., top:bottom, left:right]
    return out
