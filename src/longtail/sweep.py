"""Choosing a recipe honestly: a grid of settings ranked on the validation split alone, then the
chosen one trained at several seeds, each tested once.

    longtail sweep sweeps/cifar100_lt_if100_recipe.yaml [KEY=VALUE ...] [--stage search|final|all] [--jobs 2] [--dry-run]

KEY=VALUE: runtime keys for this machine, how the runs are made and not what they learn
(device=cuda compile_mode=reduce-overhead data.root=DIR): one spec serves every machine.

The spec is a YAML file:

    base: cifar100_lt_if100_la            # a shipped config name or a YAML path
    fixed: [eval.every=2]                 # overrides for every run
    grid:                                 # every combination is one setting of the search
      optim.weight_decay: [5.0e-4, 2.0e-3]
      optim.sam_rho: [0, 0.05]
    points:                               # and each of these, keys that move together
      - {optim.lr: 0.02, optim.weight_decay: 2.5e-3}
    search: [optim.epochs=100]            # overrides for the search runs only (a shorter proxy schedule)
    search_seed: 0
    final:                                # the chosen setting, then each method's overrides, at each seed
      seeds: [0, 1, 2]
      methods: {la: [], gala: [loss.name=gala, loss.mode=reference], ce: [loss.name=ce]}
    out: runs/sweep

Search runs train with eval.test=false: their test split is never read, and the ranking uses each
run's best validation top-1 only. Every run is resumable: an interrupted sweep started again skips
the finished runs and resumes the others.
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from longtail.config import ConfigError, keys_where, load_config, override_key, read_yaml
from longtail.rundir import RESUMABLE_KEYS, resume_config
from longtail.shipped import resolve_config_path
from longtail.train import train

__all__ = ["RunFailed", "SweepSpec", "read_spec", "search_runs", "final_runs", "rank", "run_all"]

SPEC_KEYS = ("base", "fixed", "grid", "points", "search", "search_seed", "final", "out")


@dataclass
class SweepSpec:
    base: str
    grid: dict[str, list]
    points: list[dict] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    search_seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: dict[str, list[str]] = field(default_factory=lambda: {"base": []})
    out: str = "runs/sweep"
    machine: list[str] = field(default_factory=list)  # runtime overrides for this machine


SWEEP_SETS = ("eval.test", "eval.track_test", "out_dir", "run_name")  # the sweep's own: tests only final runs


def _machine_overrides(overrides: list[str]) -> list[str]:
    runtime = keys_where("runtime")
    for text in overrides:
        name = override_key(text)
        if name in SWEEP_SETS:
            raise ConfigError(f"{name} is set by the sweep itself (search runs never read the test split; "
                              "each run has its own folder); leave it out")
        if name not in runtime:
            raise ConfigError(f"{name} changes what the runs learn, not how they are made: put {text} in the "
                              "sweep's fixed list (or its grid); on the command line go only runtime keys "
                              "(device, compile_mode, data.root, threads, ...)")
    return list(overrides)


def read_spec(path: str | Path, machine: list[str] | None = None) -> SweepSpec:
    """The sweep YAML at `path`, checked: every key known, every override of the config's form;
    `machine`: runtime overrides for every run (KEY=VALUE)."""
    data = read_yaml(path)
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown sweep keys {unknown}; a sweep has {', '.join(SPEC_KEYS)}")
    grid, points = data.get("grid") or {}, data.get("points") or []
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{path}: grid must map config keys to non-empty lists of values, e.g. "
                          "{optim.weight_decay: [5.0e-4, 2.0e-3]}")
    if not isinstance(points, list) or not all(isinstance(p, dict) and p for p in points):
        raise ConfigError(f"{path}: points must be a list of settings, each mapping config keys to one value, "
                          "e.g. [{optim.lr: 0.02, optim.weight_decay: 2.5e-3}]")
    if not grid and not points:
        raise ConfigError(f"{path}: a sweep needs settings to search: a grid, points, or both")
    final = data.get("final") or {}
    spec = SweepSpec(base=str(data.get("base", "")), grid=grid, points=points, fixed=list(data.get("fixed") or []),
                     search=list(data.get("search") or []), search_seed=int(data.get("search_seed", 0)),
                     seeds=list(final.get("seeds", [0, 1, 2])), methods=dict(final.get("methods") or {"base": []}),
                     out=str(data.get("out", "runs/sweep")), machine=_machine_overrides(list(machine or [])))
    for point in _points(spec):  # every setting must be a valid config before anything trains
        load_config(_base_path(spec), _overrides(spec, point, spec.search, spec.search_seed))
        for extra in spec.methods.values():
            load_config(_base_path(spec), _overrides(spec, point, list(extra), spec.search_seed))
    return spec


def _base_path(spec: SweepSpec) -> Path:
    return resolve_config_path(spec.base)


def _points(spec: SweepSpec) -> list[dict]:
    """The grid's every combination, then the listed points, each setting once."""
    keys = list(spec.grid)
    grid = [dict(zip(keys, values)) for values in itertools.product(*(spec.grid[k] for k in keys))] if keys else []
    unique = {}
    for point in grid + spec.points:  # the same values in another key order are the same setting
        unique.setdefault(tuple(sorted((k, repr(v)) for k, v in point.items())), point)
    return list(unique.values())


def _name(point: dict) -> str:
    """A folder name for a setting: its values as key=value, the section dropped."""
    return ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())


def _overrides(spec: SweepSpec, point: dict, extra: list[str], seed: int) -> list[str]:
    return [*spec.fixed, *spec.machine, *(f"{k}={v}" for k, v in point.items()), *extra, f"seed={seed}"]


class RunFailed(RuntimeError):
    """A run trained in a process of its own (--jobs) stopped with an error."""


@dataclass
class Run:
    folder: Path
    overrides: list[str]

    @property
    def finished(self) -> bool:
        return (self.folder / "results.json").exists()


def search_runs(spec: SweepSpec) -> list[Run]:
    """One run per setting at the search seed, on the search schedule, never reading the test split."""
    root = Path(spec.out) / "search"
    return [Run(root / f"{_name(p)}_s{spec.search_seed}",
                _overrides(spec, p, [*spec.search, "eval.test=false"], spec.search_seed)) for p in _points(spec)]


def rank(runs: list[Run]) -> list[tuple[float, Run]]:
    """The finished search runs by best validation top-1, best first (ties: grid order)."""
    scored = []
    for i, run in enumerate(runs):
        if run.finished:
            best = json.loads((run.folder / "results.json").read_text())["best_val"]["top1"]
            scored.append((best, -i, run))
    return [(best, run) for best, _, run in sorted(scored, key=lambda t: t[:2], reverse=True)]


def final_runs(spec: SweepSpec, chosen: Run) -> list[Run]:
    """The chosen setting on the full schedule, each method at each seed, tested once at the end."""
    point = _point_of(spec, chosen)
    root = Path(spec.out) / "final" / _name(point)
    # a seed of every method before the next seed: a sweep cut short still compares them all
    return [Run(root / f"{method}_s{seed}", _overrides(spec, point, list(extra), seed))
            for seed in spec.seeds for method, extra in spec.methods.items()]


def _point_of(spec: SweepSpec, run: Run) -> dict:
    for point, candidate in zip(_points(spec), search_runs(spec)):
        if candidate.folder == run.folder:
            return point
    raise ValueError(f"{run.folder} is not a run of this sweep")


def _on_resume(spec: SweepSpec) -> list[str]:
    """The machine's overrides a resume may change (the others are in the run's saved config)."""
    return [o for o in spec.machine if override_key(o) in RESUMABLE_KEYS]


def _train_here(spec: SweepSpec, run: Run) -> None:
    if (run.folder / "last.pt").exists():
        train(resume_config(run.folder, _on_resume(spec)), run.folder, resume=True)
    else:
        train(load_config(_base_path(spec), run.overrides), run.folder)


def _train_apart(spec: SweepSpec, run: Run) -> None:
    """Train in a process of its own (one thread unless the machine's overrides say otherwise), so
    that `--jobs` runs side by side."""
    if (run.folder / "last.pt").exists():
        cmd = ["train", "--resume", str(run.folder), "threads=1", *_on_resume(spec)]
    else:
        cmd = ["train", str(_base_path(spec)), "threads=1", *run.overrides, "--run-dir", str(run.folder)]
    log = run.folder.with_name(run.folder.name + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        code = subprocess.call([sys.executable, "-m", "longtail", *cmd], stdout=out, stderr=subprocess.STDOUT)
    if code:
        raise RunFailed(f"{run.folder} stopped with exit code {code}; its log: {log}")


def _train_all(spec: SweepSpec, runs: list[Run], jobs: int) -> None:
    todo = [r for r in runs if not r.finished]
    if jobs <= 1:
        for run in todo:
            _train_here(spec, run)
        return
    with ThreadPoolExecutor(jobs) as pool:
        for _ in pool.map(lambda r: _train_apart(spec, r), todo):
            pass


def ranking_table(ranked: list[tuple[float, Run]], runs: list[Run]) -> str:
    lines = ["| setting (search schedule) | best validation top-1 |", "|---|---|"]
    lines += [f"| {run.folder.name} | {best:.2f} |" for best, run in ranked]
    lines += [f"| {run.folder.name} | (not finished) |" for run in runs if not run.finished]
    return "\n".join(lines) + "\n"


def run_all(spec: SweepSpec, stage: str = "all", jobs: int = 1, dry_run: bool = False) -> list[Run]:
    """Search, rank on validation, then the final runs of the best setting; returns the final runs
    (none before the search has finished)."""
    search = search_runs(spec)
    if dry_run:
        for run in search:
            print(f"search  {'done' if run.finished else 'todo'}  {run.folder}")
    if stage in ("search", "all") and not dry_run:
        _train_all(spec, search, jobs)
    ranked = rank(search)
    print(ranking_table(ranked, search))
    if len(ranked) < len(search) or stage == "search":
        return []
    chosen = ranked[0][1]
    final = final_runs(spec, chosen)
    print(f"chosen on validation: {chosen.folder.name}")
    if dry_run:
        for run in final:
            print(f"final   {'done' if run.finished else 'todo'}  {run.folder}")
    elif stage in ("final", "all"):
        _train_all(spec, final, jobs)
    return final
