"""Speed of every registered loss relative to plain cross-entropy, and of GALA's statistics update
relative to the released code's per-sample loop.

    python benchmarks/loss_speed.py [--batch 128] [--classes 100 1000 8142] [--threads 2]

Part 1: forward + backward of each loss in `longtail.losses.available()` (built by name with its
default parameters, in training mode, so GALA's statistics update is included), as the ratio of
its median time to the median time of plain F.cross_entropy on the same logits. Logits are
scale * cos with scale 30 (valid input for the cosine-head losses too).

Part 2: GALA's statistics update alone (vectorised: bincount/index_add_ over labels) against the
released algorithm's per-sample Python loop over a running C x C matrix with double accumulation
(a short re-statement of lt-project's `collect_grad`, same as in tests/test_gala.py).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import longtail.losses as losses


def median_time(fn, iters: int, repeats: int) -> float:
    """Median over `repeats` of the mean time of `iters` calls, after one warm-up round."""
    return median_times([fn], iters, repeats)[0]


def median_times(fns, iters: int, repeats: int) -> list[float]:
    """Like median_time for several functions, interleaved within each repeat, so that load from
    other processes on a shared machine falls on all of them alike."""
    for fn in fns:
        for _ in range(iters):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            times[k].append((time.perf_counter() - start) / iters)
    return [statistics.median(t) for t in times]


def fwd_bwd(loss_fn, z, y):
    def step():
        z.grad = None
        loss_fn(z, y).backward()
    return step


class ReleasedStats:
    """The released update: per-sample loop into a running C x C matrix, cumulative totals each step."""

    def __init__(self, c: int):
        self.M = torch.zeros(c, c)  # float32, as released
        self.pos = torch.zeros(c, c)
        self.neg = torch.zeros(c, c)
        self.eye = torch.eye(c)

    def update(self, adjusted, y):
        grad = ((torch.softmax(adjusted, 1) - F.one_hot(y, adjusted.shape[1])) / len(y)).abs()
        for i in range(len(y)):
            self.M[:, y[i]] += grad[i]
        self.pos += self.M * self.eye
        self.neg += self.M * (1 - self.eye)
        return self.pos.sum(1), self.neg.sum(0)  # theta, phi ("sample")


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
        fast = median_time(lambda: gala._update(adjusted, y), 20, args.repeats)
        slow_repeats = 3 if c > 2000 else args.repeats
        slow = median_time(lambda: released.update(adjusted, y), 1 if c > 2000 else 5, slow_repeats)
        print(f"| {c} | {fast * 1e3:.3f} | {slow * 1e3:.1f} | {slow / fast:.0f}x |")


if __name__ == "__main__":
    main()
