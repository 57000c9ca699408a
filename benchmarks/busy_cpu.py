"""Training speed on a busy CPU: the default thread count against threads=1, with one core taken by
another process and with the machine idle.

    python benchmarks/busy_cpu.py [--data-root ../shared/data] [--repeats 3]

Each measurement is `longtail train` of the GALA CIFAR-100-LT recipe for one short epoch (12 images a
class, about 1,150 steps' worth of images), its images/s read from metrics.jsonl; the median of
`--repeats` runs. The competitor is a Python busy loop pinned to CPU 0. Three thread settings:
- default: `threads` unset (longtail picks the free cores, see longtail/threads.py);
- threads=1;
- all cores: threads set to every usable core, which is what the default did before it looked
  at the load (torch's own default).
Ratios: under load, default / threads=1 (target >= 0.8); idle, default / all cores (target >= 1,
give or take the noise of repeated runs).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from longtail.threads import usable_cpus  # noqa: E402

COMPETITOR = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"


def rate(data_root: str, threads: int | None, out: Path, name: str) -> float:
    cmd = [sys.executable, "-m", "longtail", "train", "cifar100_lt_if100_gala_reference", f"data.root={data_root}",
           "data.limit_per_class=12", "data.limit_eval_per_class=1", "optim.epochs=1", "eval.track_test=false",
           "progress=quiet", f"out_dir={out}", f"run_name={name}"] + ([f"threads={threads}"] if threads else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return json.loads((out / name / "metrics.jsonl").read_text().splitlines()[0])["images_per_s"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    cores = usable_cpus()
    settings = {"default": None, "threads=1": 1, f"all cores ({cores})": cores}
    medians: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for load in ("idle", "one core busy"):
            competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR]) if load != "idle" else None
            try:
                for label, threads in settings.items():
                    runs = [rate(args.data_root, threads, Path(tmp), f"{len(medians)}-{i}") for i in range(args.repeats)]
                    medians[load, label] = statistics.median(runs)
                    print(f"{load:>13} | {label:>15} | {' '.join(f'{r:6.1f}' for r in runs)} images/s", flush=True)
            finally:
                if competitor:
                    competitor.kill()
    all_cores = f"all cores ({cores})"
    print(f"\n`python benchmarks/busy_cpu.py --repeats {args.repeats}`, {cores} usable cores, "
          f"median images/s of {args.repeats} runs\n")
    print("| machine | default | threads=1 | all cores | default / threads=1 | default / all cores |")
    print("|---|---|---|---|---|---|")
    for load in ("idle", "one core busy"):
        d, one, every = (medians[load, k] for k in ("default", "threads=1", all_cores))
        print(f"| {load} | {d:.0f} | {one:.0f} | {every:.0f} | {d / one:.2f}x | {d / every:.2f}x |")


if __name__ == "__main__":
    main()
