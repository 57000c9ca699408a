"""What SAM costs a training step: the GALA CIFAR-100-LT step (ResNet-32, batch 64) with
`optim.sam_rho` set against the same step without it, timed in one process.

    python benchmarks/sam_cost.py [--data-root ../shared/data] [--steps 20] [--repeats 5] [--threads 1]

Both steps run `longtail.train.train_step` on one augmented batch of the recipe, in alternating
blocks of `--steps` steps (so a change in the machine's load falls on both alike); the figure is
the median over `--repeats` blocks of SAM's time a step over plain SGD's. SAM takes two forward and
backward passes a step (the ascent to the perturbed weights, then the gradient there), so about 2x
is expected.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from longtail.config import load_config  # noqa: E402
from longtail.shipped import resolve_config_path  # noqa: E402
from longtail.train import setup, train_step  # noqa: E402


def state_for(data_root: str, out: Path, name: str, threads: int, extra: list[str]):
    cfg = load_config(resolve_config_path("cifar100_lt_if100_gala_reference"),
                      [f"data.root={data_root}", "data.limit_per_class=12", "data.limit_eval_per_class=1",
                       f"threads={threads}", "progress=quiet", *extra])
    return setup(cfg, run_dir=out / name)


def seconds_a_step(state, x, y, steps: int) -> float:
    state.model.train()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = train_step(state, x, y)
    float(loss)  # wait for the last step
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rho", type=float, default=0.05)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        plain = state_for(args.data_root, Path(tmp), "plain", args.threads, [])
        sam = state_for(args.data_root, Path(tmp), "sam", args.threads, [f"optim.sam_rho={args.rho}"])
        x, y = next(iter(plain.loader.epoch(0, 0, torch.Generator().manual_seed(0))))
        for state in (plain, sam):  # warm-up
            seconds_a_step(state, x, y, 2)
        ratios, times = [], {"plain": [], "sam": []}
        for _ in range(args.repeats):
            a, b = seconds_a_step(plain, x, y, args.steps), seconds_a_step(sam, x, y, args.steps)
            times["plain"].append(a)
            times["sam"].append(b)
            ratios.append(b / a)
        plain.loader.close()
        sam.loader.close()
    print(f"batch {len(y)}, {args.threads} thread(s), precision {plain.precision}, {args.repeats} blocks of "
          f"{args.steps} steps")
    print(f"plain SGD: {1000 * statistics.median(times['plain']):.1f} ms a step; "
          f"SAM (rho {args.rho}): {1000 * statistics.median(times['sam']):.1f} ms a step; "
          f"SAM / plain: {statistics.median(ratios):.2f}x (blocks: {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
