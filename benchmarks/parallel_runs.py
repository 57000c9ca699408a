"""Two runs at once with 1 thread each, or one run with both threads: which trains more images per
second on this CPU? It decides how benchmarks/reproduce_cifar.py fills the machine (--parallel).

    python benchmarks/parallel_runs.py [--config configs/cifar100_lt_if100_gala_reference.yaml]
        [--epochs 2] [--threads 2] [--out FILE]

Real `longtail train` runs of the CIFAR-100-LT IF100 recipe (torch.compile on, as the queue runs
them), first one run with --threads threads, then --threads runs side by side with 1 thread each.
The figure is the last epoch's images/s from each run's metrics.jsonl (the first epoch includes
compilation); the side-by-side figure is the sum over the runs. Whole-command wall times are
printed too (they include start-up, evaluation and the final report). Nothing else should be
running: pause other jobs first (kill -STOP, then kill -CONT).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def start(config: str, out: Path, name: str, threads: int, epochs: int, data_root: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "longtail", "train", config, f"data.root={data_root}", f"out_dir={out}",
           f"run_name={name}", f"threads={threads}", f"optim.epochs={epochs}", "compile=true",
           f"eval.every={epochs}", "progress=quiet"]
    return subprocess.Popen(cmd, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, stdout=subprocess.DEVNULL)


def last_epoch_rate(run_dir: Path) -> float:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["images_per_s"]


def measure(config: str, out: Path, runs: int, threads: int, epochs: int, data_root: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    procs = [start(config, out, f"r{runs}x{threads}_{i}", threads, epochs, data_root) for i in range(runs)]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a training run failed; run its command by hand to see why")
    wall = time.perf_counter() - t0
    return sum(last_epoch_rate(out / f"r{runs}x{threads}_{i}") for i in range(runs)), wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "cifar100_lt_if100_gala_reference.yaml"))
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", help="also write the output to this file (command at the top)")
    args = ap.parse_args()
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2: the first epoch includes compilation")
    lines = [f"$ python benchmarks/{Path(__file__).name} " + " ".join(sys.argv[1:]),
             f"config {Path(args.config).name}, {args.epochs} epochs, compile=true; torch threads per run as shown",
             "", "| runs x threads | images/s (last epoch, all runs) | vs 1 run | wall s (whole commands) |",
             "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        one, one_wall = measure(args.config, Path(tmp), 1, args.threads, args.epochs, args.data_root)
        lines.append(f"| 1 x {args.threads} | {one:.1f} | 1.00x | {one_wall:.0f} |")
        many, many_wall = measure(args.config, Path(tmp), args.threads, 1, args.epochs, args.data_root)
        lines.append(f"| {args.threads} x 1 | {many:.1f} | {many / one:.2f}x | {many_wall:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
