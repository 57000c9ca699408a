"""CPU threads for training: how many to use on a machine others may be using, and noticing when
they are starved.

PyTorch uses one OpenMP thread per core by default. When another process keeps one of those cores
busy, every parallel region waits for the thread that shares it, and a two-thread run trains at
about half the speed of a one-thread run (benchmarks/busy_cpu.py). So the default counts the cores
that are free now: those this process may run on (its affinity and cgroup quota) that other
processes left mostly idle over a short look at /proc/stat. A load that starts later is caught by
`RateWatch`, which warns once when the training rate collapses.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

__all__ = ["usable_cpus", "free_cpus", "default_threads", "RateWatch"]


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity, capped by a cgroup v2 CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def _cpu_times() -> dict[int, tuple[int, int]]:
    """{cpu: (busy, total)} jiffies from /proc/stat."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(v) for v in fields]
            idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
            times[int(name[3:])] = (sum(values) - idle, sum(values))
    return times


def free_cpus(window_s: float = 0.2, busy_share: float = 0.5) -> int:
    """Usable CPUs that other processes kept busy less than `busy_share` of a `window_s` look
    (at least 1). Where /proc/stat cannot be read, all usable CPUs count as free."""
    usable = usable_cpus()
    try:
        before = _cpu_times()
        time.sleep(window_s)
        after = _cpu_times()
    except (OSError, ValueError, IndexError):
        return usable
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(after)
    busy = 0
    for cpu in mine:
        if cpu in before and cpu in after:
            d_busy, d_total = (a - b for a, b in zip(after[cpu], before[cpu]))
            busy += d_total > 0 and d_busy / d_total > busy_share
    return max(1, min(usable, len(mine) - busy))


def default_threads() -> int | None:
    """The thread count for `threads: null`: the free CPUs, or None (torch's own choice) where the
    environment already sets OMP_NUM_THREADS (torchrun sets 1 per process)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    return free_cpus()


class RateWatch:
    """Warns once when training slows to under `drop` of the best rate seen, measured over windows
    of `window_s` seconds: another process has most likely taken cores the threads were using."""

    def __init__(self, threads: int, run_dir: str = "RUN", window_s: float = 10.0, drop: float = 0.5):
        self.threads, self.run_dir, self.window_s, self.drop = threads, run_dir, window_s, drop
        self.best = 0.0
        self.warned = False
        self.restart()

    def restart(self) -> None:
        """Begin a new window (after a pause that is not training: evaluation, a checkpoint)."""
        self.t0, self.images = time.perf_counter(), 0

    def update(self, images: int) -> None:
        self.images += images
        elapsed = time.perf_counter() - self.t0
        if elapsed < self.window_s:
            return
        rate = self.images / elapsed
        if self.best and rate < self.drop * self.best and not self.warned:
            self.warned = True
            hint = (f"; with {self.threads} threads on a busy CPU, threads=1 is often faster (stop with Ctrl-C, then "
                    f"`longtail train --resume {self.run_dir} threads=1`)" if self.threads > 1 else "")
            print(f"warning: training slowed to {rate:.0f} images/s from {self.best:.0f}: another process is probably "
                  f"using the CPU{hint}", file=sys.stderr, flush=True)
        self.best = max(self.best, rate)
        self.restart()
