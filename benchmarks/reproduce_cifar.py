"""Run the CIFAR-100-LT reproduction queue (issue 6) one run at a time, resuming whatever was cut off.

    python benchmarks/reproduce_cifar.py --out /work/runs            # run (or resume) everything
    python benchmarks/reproduce_cifar.py --out /work/runs --dry-run  # show what is done / next

Each run is `longtail train configs/<config>.yaml seed=S` in OUT/<config>_s<S>. A run folder with
results.json is done and skipped; one with last.pt is resumed; otherwise the run starts. Stop it
any time (Ctrl-C checkpoints the current run); start it again later and it carries on. At the end
the markdown table of everything finished is written to OUT/report.md.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (config, seed) in the order they run: one seed of every IF100 method first (so the table can be
# read as early as possible, a run every ~1.5-2 h on CPU), then the second seeds, then the other IFs.
# (A first GALA-reference seed-0 run, with the nearest shear of longtail 0.1.0, is kept apart as
# c100_if100_gala_reference_s0; the queue's gala_reference runs use the released bicubic shear.)
IF100 = ["ce", "gala_paper", "gala_reference", "la", "ala", "bs", "ldam_drw", "gcl"]
QUEUE = [
    *[(f"cifar100_lt_if100_{m}", 0) for m in IF100],
    *[(f"cifar100_lt_if100_{m}", 1) for m in ("gala_reference", "ce", "gala_paper", "la", "ala")],
    *[(f"cifar100_lt_if{imb}_{m}", 0) for imb in (200, 50, 10) for m in ("gala_reference", "ce")],
]


def state(run_dir: Path) -> str:
    if (run_dir / "results.json").exists():
        return "done"
    if (run_dir / "last.pt").exists():
        return "resume"
    return "start"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs", help="folder for the run folders (keep it out of git)")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--extra", nargs="*", default=["eval.every=2", "compile=true"],
                    help="overrides for every new run (default: eval every 2 epochs, torch.compile)")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    for config, seed in QUEUE:
        if not (REPO / "configs" / f"{config}.yaml").is_file():
            raise SystemExit(f"config {config} is missing from configs/")
        run_dir = out / f"{config}_s{seed}"
        what = state(run_dir)
        print(f"{what:7s} {run_dir}", flush=True)
        if args.dry_run or what == "done":
            continue
        cmd = [sys.executable, "-m", "longtail", "train"]
        if what == "resume":
            cmd += ["--resume", str(run_dir), f"threads={args.threads}", "progress=log"]
        else:
            cmd += [str(REPO / "configs" / f"{config}.yaml"), f"seed={seed}", f"data.root={args.data_root}",
                    f"out_dir={out}", f"run_name={run_dir.name}", f"threads={args.threads}", "progress=log",
                    *args.extra]
        code = subprocess.call(cmd, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        if code != 0:
            print(f"stopped: {run_dir} exited with {code}; run this script again to continue", flush=True)
            return code
    finished = [str(p.parent) for p in sorted(out.glob("*/results.json"))]
    if finished and not args.dry_run:
        subprocess.call([sys.executable, "-m", "longtail", "report", *finished, "--out", str(out / "report.md")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
