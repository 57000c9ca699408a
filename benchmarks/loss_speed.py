"""Speed of every registered loss relative to plain cross-entropy, and of GALA's statistics update
relative to the released code's `collect_grad` (per-sample loop and C x C totals).

    python benchmarks/loss_speed.py [--batch 128] [--classes 100 1000 8142] [--threads 2]

Part 1: forward + backward of each loss in `longtail.losses.available()` (built by name with its
default parameters, in training mode, so GALA's statistics update is included), as the ratio of
its median time to the median time of plain F.cross_entropy on the same logits. Logits are
scale * cos with scale 30 (valid input for the cosine-head losses too).

Part 2: GALA's statistics update alone (vectorised: bincount/index_add_ over labels) against the
released `collect_grad` (lt-project run_networks.py), re-stated step for step: float32, two
per-sample Python adds into C x C matrices, a per-step eye mask, cumulative C x C totals and their
sums (tests/test_gala.py replays the same algorithm in float64 for correctness).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import longtail.losses as losses


def median_time(fn, iters: int, repeats: int) -> float:
    """Median over `repeats` of the mean time of `iters` calls, after one warm-up round."""
    return median_times([fn], iters, repeats)[0]


def median_times(fns, iters, repeats: int) -> list[float]:
    """Like median_time for several functions, interleaved within each repeat, so that load from
    other processes on a shared machine falls on all of them alike. `iters`: one count for all, or
    one per function."""
    counts = list(iters) if isinstance(iters, (list, tuple)) else [iters] * len(fns)
    for fn, n in zip(fns, counts):
        for _ in range(n):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, (fn, n) in enumerate(zip(fns, counts)):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            times[k].append((time.perf_counter() - start) / n)
    return [statistics.median(t) for t in times]


def fwd_bwd(loss_fn, z, y):
    def step():
        z.grad = None
        loss_fn(z, y).backward()
    return step


class ReleasedStats:
    """The released `collect_grad` (lt-project run_networks.py), float32 as released, step for step.

    Per sample, |g_i| is added to column y_i of the running C x C matrix AND to row y_i of the epoch
    matrix (two indexed adds per sample); then a fresh eye mask, the cumulative pos/neg C x C totals,
    their four row/column sums and the classifier pos/neg ratio -- all of it every step.
    """

    def __init__(self, c: int):
        self.c = c
        self.M = torch.zeros(c, c)  # accum_cls_fine_grad
        self.epoch_neg = torch.zeros(c, c)  # accum_neg_logit_grad_epoch
        self.pos = torch.zeros(c, c)  # accum_cls_pos_fine_grad
        self.neg = torch.zeros(c, c)  # accum_cls_neg_fine_grad

    def update(self, adjusted, y):
        grad = ((torch.softmax(adjusted, 1) - F.one_hot(y, adjusted.shape[1])) / len(y)).abs()
        for i in range(len(y)):
            self.M[:, y[i]] += grad[i]
            self.epoch_neg[y[i], :] += grad[i]
        eye = torch.eye(self.c)
        self.pos += self.M * eye
        self.neg += self.M * (1 - eye)
        cls_pos, cls_neg = self.pos.sum(1), self.neg.sum(1)
        self.sample_pos, sample_neg = self.pos.sum(0), self.neg.sum(0)
        self.ratio = (cls_pos + 1e-10) / (cls_neg + 1e-10)
        return cls_pos, sample_neg  # theta, phi ("sample")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000, 8142])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"$ python benchmarks/loss_speed.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"median of {args.repeats} repeats, CPU")

    names = losses.available()
    variants = [(n, {}) for n in names] + [("gala", {"mode": "reference"}), ("gala", {"phi": "classifier"})]
    labels = [n if not kw else f"{n}({','.join(f'{k}={v}' for k, v in kw.items())})" for n, kw in variants]
    print("\nforward+backward time / plain CE time")
    print("| C | CE ms | " + " | ".join(labels) + " |")
    print("|---|---|" + "---|" * len(labels))
    gen = torch.Generator().manual_seed(args.seed)
    for c in args.classes:
        counts = torch.logspace(3, 0, c).floor().clamp(min=1)  # a long-tailed count profile
        z = (30 * (2 * torch.rand(args.batch, c, generator=gen) - 1)).requires_grad_(True)
        y = torch.randint(0, c, (args.batch,), generator=gen)
        iters = max(4, int(2e6 // (args.batch * c)))
        # built as longtail.train builds them: the loop checks the loss for NaN itself, so the losses
        # skip their own B x C finiteness check of the logits (label-range checks stay on)
        built = [losses.build(n, class_counts=counts, check_values=False, **kw).train() for n, kw in variants]
        ce, *times = median_times([fwd_bwd(F.cross_entropy, z, y)] + [fwd_bwd(fn, z, y) for fn in built],
                                  iters, args.repeats)
        ratios = [t / ce for t in times]
        print(f"| {c} | {ce * 1e3:.3f} | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")

    print("\nGALA statistics update: vectorised vs the released per-sample loop (C x C matrix)")
    print("| C | vectorised ms | released loop ms | speed-up |")
    print("|---|---|---|---|")
    for c in args.classes:
        counts = torch.ones(c)
        gala = losses.build("gala", class_counts=counts, mode="reference").train()
        released = ReleasedStats(c)
        adjusted = 3 * torch.randn(args.batch, c, generator=gen)
        y = torch.randint(0, c, (args.batch,), generator=gen)
        # interleaved in each repeat, as in part 1, so that load from other jobs falls on both alike
        fast, slow = median_times([lambda: gala._update(adjusted, y), lambda: released.update(adjusted, y)],
                                  [20, 1 if c > 2000 else 5], 3 if c > 2000 else args.repeats)
        print(f"| {c} | {fast * 1e3:.3f} | {slow * 1e3:.1f} | {slow / fast:.0f}x |")


if __name__ == "__main__":
    main()
