"""The default thread count leaves out cores other processes keep busy; a collapse of the training
rate is reported once."""
import os
import subprocess
import sys
import time

import pytest

from longtail import threads


def fake_stat(monkeypatch, before: dict, after: dict):
    """/proc/stat as two readings: {cpu: (busy, total)} jiffies."""
    readings = iter([before, after])
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(readings))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(before))
    monkeypatch.setattr(threads, "usable_cpus", lambda: len(before))


def test_free_cpus_counts_cores_others_leave_mostly_idle(monkeypatch):
    # cpu 0: 90 of 100 jiffies busy; cpu 1: 10; cpu 2: exactly half (not busy); cpu 3: 60
    fake_stat(monkeypatch, {0: (0, 0), 1: (0, 0), 2: (0, 0), 3: (0, 0)},
              {0: (90, 100), 1: (10, 100), 2: (50, 100), 3: (60, 100)})
    assert threads.free_cpus() == 2
    fake_stat(monkeypatch, {0: (0, 0), 1: (0, 0)}, {0: (100, 100), 1: (100, 100)})
    assert threads.free_cpus() == 1  # never fewer than one thread


def test_the_default_respects_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() is None  # torch's choice, from the environment (torchrun sets 1)
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "free_cpus", lambda: 5)
    assert threads.default_threads() == 5


@pytest.mark.skipif(threads.usable_cpus() < 2 or not os.path.exists("/proc/stat"), reason="needs two CPUs and /proc/stat")
def test_a_core_kept_busy_is_not_counted_free():
    cpu = min(os.sched_getaffinity(0))
    spin = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True:\n pass"])
    try:
        time.sleep(0.5)  # it spins before the look starts
        assert threads.free_cpus(window_s=0.3) <= threads.usable_cpus() - 1
    finally:
        spin.kill()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_collapsed_rate_is_reported_once(monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr(threads.time, "perf_counter", clock)
    watch = threads.RateWatch(threads=2, window_s=10.0)
    for rate in (300, 310, 200, 140, 100, 90):  # one window each; half of the best (310) is 155
        clock.now += 10.0
        watch.update(int(rate * 10))
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: training slowed to 140 images/s from 310: another process is probably using the CPU; "
                   "with 2 threads on a busy CPU, threads=1 is often faster (stop with Ctrl-C, then "
                   "`longtail train --resume RUN threads=1`)"]


def test_pauses_between_windows_do_not_count(monkeypatch, capsys):
    clock = Clock()
    monkeypatch.setattr(threads.time, "perf_counter", clock)
    watch = threads.RateWatch(threads=1, window_s=10.0)
    clock.now += 10.0
    watch.update(3000)
    clock.now += 100.0  # an evaluation: not training time
    watch.restart()
    clock.now += 10.0
    watch.update(2900)
    assert capsys.readouterr().err == ""
    clock.now += 10.0
    watch.update(1000)
    assert "slowed to 100 images/s from 300" in capsys.readouterr().err  # one thread: no threads hint
