"""Which training images each step sees: the instance order (every image once per epoch) or
class-balanced draws (a class uniformly, then one of its images), as index batches.

Both are pure functions of (seed, epoch): an interrupted run resumes to the same batches, and N
ranks see exactly the global batches one process would (each rank takes its slice of each).
"""
from __future__ import annotations

import math

import torch

SAMPLERS = ("instance", "class_balanced")


def _generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def batches_per_epoch(num_samples: int, global_batch: int, world: int = 1, drop_last: bool = True) -> int:
    """How many global batches an epoch of `num_samples` indices (images or class-balanced draws) makes."""
    # Under data parallelism a last partial batch is always dropped: split unevenly, the ranks'
    # mean losses would no longer average to the batch mean (and a rank could get no sample).
    if drop_last or world > 1:
        return num_samples // global_batch
    return math.ceil(num_samples / global_batch)


def cut_batches(order: torch.Tensor, global_batch: int, rank: int = 0, world: int = 1,
                drop_last: bool = True) -> list[torch.Tensor]:
    """Cut an epoch's index order into global batches; return this rank's slice of each."""
    n_batches = batches_per_epoch(len(order), global_batch, world, drop_last)
    local = global_batch // world
    return [order[b * global_batch:(b + 1) * global_batch][rank * local:(rank + 1) * local]
            for b in range(n_batches)]


def epoch_batches(num_samples: int, global_batch: int, epoch: int, seed: int, rank: int = 0, world: int = 1,
                  drop_last: bool = True) -> list[torch.Tensor]:
    """This rank's index batches for one epoch: a permutation fixed by (seed, epoch), cut into global
    batches, each split evenly across ranks."""
    perm = torch.randperm(num_samples, generator=_generator(seed, epoch))
    return cut_batches(perm, global_batch, rank, world, drop_last)


def class_balanced_order(labels: torch.Tensor, epoch: int, seed: int, num_draws: int | None = None) -> torch.Tensor:
    """`num_draws` (default: as many as there are images) indices drawn with replacement so that
    every class is equally likely: a class uniformly at random, then one of its images uniformly.
    This is the class-balanced re-sampling of classifier re-training (GCL's stage two samples
    image i with probability proportional to 1 / n_{y_i}, the same distribution)."""
    labels = torch.as_tensor(labels).long().cpu()
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError("class-balanced sampling needs a non-empty 1-D tensor of labels")
    present = torch.unique(labels)  # classes without training images cannot be drawn
    counts = torch.bincount(labels)[present]
    by_class = torch.argsort(labels, stable=True)  # image indices grouped by class, classes ascending
    starts = torch.cumsum(counts, 0) - counts
    g = _generator(seed, epoch)
    n = labels.numel() if num_draws is None else int(num_draws)
    cls = torch.randint(len(present), (n,), generator=g)
    within = (torch.rand(n, generator=g, dtype=torch.float64) * counts[cls]).long().clamp_max(counts[cls] - 1)
    return by_class[starts[cls] + within]


def class_balanced_batches(labels: torch.Tensor, global_batch: int, epoch: int, seed: int, rank: int = 0,
                           world: int = 1, drop_last: bool = True) -> list[torch.Tensor]:
    """This rank's class-balanced index batches for one epoch (as many draws as images)."""
    return cut_batches(class_balanced_order(labels, epoch, seed), global_batch, rank, world, drop_last)
