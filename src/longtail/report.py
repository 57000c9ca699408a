"""Result tables (markdown) across runs and seeds, and per-class accuracy plots."""
from __future__ import annotations

import csv
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt


def load_results(paths) -> list[dict]:
    """The results.json of each given path: a run folder, a results.json itself, or a folder scanned
    for results.json at any depth (`longtail demo` puts its runs two levels down), in path order.
    Each file counts once, however many given paths reach it (a folder and a run inside it, a link).

    A file that is not JSON is an error wherever it is: it is most likely a run's, and skipping it
    would drop a seed from the means unseen. JSON that is not a longtail run's (another tool's
    results.json, `{}`) is an error when named (the file, or the folder it lies in), and skipped with
    a warning on stderr when found by scanning below the named folder, which may hold other output.
    A path with no longtail results.json is an error (FileNotFoundError)."""
    found, seen = [], set()
    for given in map(Path, paths):
        files = _results_files(given)
        skipped = 0
        for f in files:
            if f.resolve() in seen:  # reached by an earlier path too
                continue
            r = _read_results(f)
            if not _is_longtail_run(r):
                if f == given or f.parent == given:
                    raise ValueError(f"{f} is not a longtail results.json (one is a dict with "
                                     f"{', '.join(RUN_KEYS)}); give longtail run folders")
                print(f"warning: skipped {f}: not a longtail results.json", file=sys.stderr, flush=True)
                skipped += 1
                continue
            seen.add(f.resolve())
            r["_dir"] = str(f.parent)
            r["shifted"] = {c: _shifted_rows(f.parent, c) for c in EVAL_FILES}
            found.append(r)
        if skipped == len(files):
            raise FileNotFoundError(_nothing_found(given, skipped))
    return found


RUN_KEYS = ("dataset", "method", "seed", "checkpoints")  # what every longtail results.json has
# `longtail eval RUN --shifted-priors` writes these, per checkpoint (the stored logits are best_val's)
EVAL_FILES = {"best_val": ("eval-best.json", "eval-logits.json"), "last": ("eval-last.json",)}
SHIFTED_COLUMNS = {"raw": "raw", "pr": "+PR", "known_prior": "+LA known", "estimated_prior": "+LA EM"}
DEFAULT_SHIFTED = ("forward-50", "uniform", "backward-50")
ALL_SHIFTED = (*(f"forward-{r}" for r in (50, 25, 10, 5, 2)), "uniform", *(f"backward-{r}" for r in (2, 5, 10, 25, 50)))


def _shifted_rows(run_dir: Path, checkpoint: str) -> dict[str, dict]:
    """{prior: row} of the run's table under shifted test priors at `checkpoint`, from its eval file
    ({} if none)."""
    for name in EVAL_FILES[checkpoint]:
        try:
            checkpoints = json.loads((run_dir / name).read_text(encoding="utf-8"))["checkpoints"]
        except (OSError, ValueError, KeyError):
            continue
        rows = next(iter(checkpoints.values()), {}).get("shifted")
        if rows:
            return {row["prior"]: row for row in rows}
    return {}


def _results_files(given: Path) -> list[Path]:
    """The results.json files a given path stands for: itself when a file, else every one in the
    folder and below, sorted. Linked folders are followed (a folder of links to the runs compared),
    each real folder once, so that a link loop ends."""
    if given.is_file():
        return [given]
    if not given.is_dir():
        raise FileNotFoundError(f"{given} does not exist")
    found, visited = [], set()
    for top, dirs, files in os.walk(given, followlinks=True):
        real = os.path.realpath(top)
        if real in visited:
            dirs.clear()
            continue
        visited.add(real)
        if "results.json" in files:
            found.append(Path(top) / "results.json")
        elif "last.pt" in files and Path(top) != given:  # a seed still training or stopped: say it is left out
            print(f"warning: skipped {top}: an unfinished run (no results.json yet)", file=sys.stderr, flush=True)
    return sorted(found)


def _read_results(f: Path):
    """The parsed file; ValueError naming it when it is not JSON."""
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        # a finished run's file is whole: evaluating the run again re-creates it
        again = (f"; if it is a damaged run result, move it aside and `longtail train --resume {f.parent}` "
                 "evaluates the run again and writes it" if (f.parent / "last.pt").exists() else "")
        raise ValueError(f"{f} is not valid JSON ({e}){again}") from None


def _is_longtail_run(r) -> bool:
    return isinstance(r, dict) and all(k in r for k in RUN_KEYS) and isinstance(r["checkpoints"], dict)


def _nothing_found(given: Path, skipped: int) -> str:
    """Why a given folder yields no run, and what makes one."""
    if skipped:
        return f"{given} holds no longtail results.json ({skipped} of other tools skipped, see the warnings)"
    # a run writes results.json when its final evaluation ends; an interrupted one continues from last.pt
    if (given / "last.pt").exists():
        return (f"{given} is an unfinished run (no results.json): `longtail train --resume {given}` "
                "finishes it, and its final evaluation writes results.json")
    return (f"{given} holds no results.json, in it or in any folder below (a run writes it when it "
            "finishes; `longtail train --resume RUN` finishes an interrupted run)")


def _settings(result: dict) -> dict:
    """The run's stored experiment settings ({"section.key": value}: all but the seed, runtime keys and
    keys without effect), with its first stage's method and settings as "first_stage.<key>" for a second
    stage ({} if the run stored none)."""
    flat = dict(result.get("settings") or {})
    first = result.get("first_stage") or {}
    if first.get("settings"):
        flat["first_stage.method"] = first.get("method")
        flat.update({f"first_stage.{k}": v for k, v in first["settings"].items()})
    return flat


def _differing(known: list[dict]) -> list[str]:
    """The keys whose values differ among these settings. Second stages on first stages of different
    methods are told apart by that method: its recipe's other keys are named only where they differ
    between first stages of one method."""
    def differ(k, group):
        return len({repr(g.get(k)) for g in group}) > 1
    keys = sorted({k for f in known for k in f if differ(k, known)})
    if "first_stage.method" not in keys:
        return keys
    by_first = defaultdict(list)
    for f in known:
        by_first[f.get("first_stage.method")].append(f)
    return [k for k in keys if not k.startswith("first_stage.") or k == "first_stage.method"
            or any(differ(k, group) for group in by_first.values())]


def _label_differences(rows: list[dict], first_runs: list[dict]) -> None:
    """Where one method appears in several settings, name the settings keys that set them apart."""
    by_method = defaultdict(list)
    for row, run in zip(rows, first_runs):
        by_method[(row["dataset"], row["imb_factor"], row["method"], row["model"])].append((row, _settings(run)))
    for members in by_method.values():
        if len(members) < 2:
            continue
        keys = _differing([f for _, f in members if f])
        for row, flat in members:
            # a key missing from a run's settings has no effect there (e.g. the milestones of a cosine schedule)
            row["differs_values"] = [f"{k}={flat[k]}" for k in keys if k in flat] if flat else ["settings not stored"]
            row["differs"] = ", ".join(row["differs_values"])


def _mean_std(values: list, sign: str = "") -> str:
    """'51.00 ± 1.41' over the values that are not None ('-' if none); sign="+" signs the mean."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:{sign}.2f}"
    return f"{statistics.mean(values):{sign}.2f} ± {statistics.stdev(values):.2f}"


VARIANTS = ("raw", "pr", "pr_transductive", "la")
METRICS = ("top1", "many", "medium", "few")

# The settings that decide which images a run trains, validates and is tested on: runs paired by
# seed must agree on them, or a seed's difference mixes the methods with their data.
SPLIT_DATASETS = ("cifar10-lt", "cifar100-lt", "digits-lt")  # validation split drawn by val_per_class / val_seed
LIST_KEYS = ("data.train_list", "data.val_list", "data.test_list")


def _data_identity(flat: dict) -> dict:
    """What of a run's settings fixes its images, as far as the settings can tell: the limits; for
    the split datasets the validation split (its seed and shortfall rule only when there is one);
    for list datasets each list's file name (a path differs between machines, and a list left to
    the standard search has none: None, compared with nothing)."""
    ident = {k: flat.get(k) for k in ("data.limit_per_class", "data.limit_eval_per_class")}
    if flat.get("data.name") in SPLIT_DATASETS:
        ident["data.val_per_class"] = flat.get("data.val_per_class")
        if flat.get("data.val_per_class"):
            ident.update({k: flat.get(k) for k in ("data.val_seed", "data.val_shortfall")})
    else:
        ident.update({k: Path(str(flat[k]).rstrip("/")).name if flat.get(k) else None for k in LIST_KEYS})
    return ident


def _data_differences(mine: dict, theirs: dict) -> list[str]:
    """The data settings two rows disagree on (none where either run stored no settings)."""
    if not (mine and theirs):
        return []
    # a key only one side has (a validation seed where the other has no split) differs through the one
    # both have (val_per_class)
    keys = sorted(set(mine) & set(theirs))
    return [k for k in keys if not (k in LIST_KEYS and (mine[k] is None or theirs[k] is None)) and mine[k] != theirs[k]]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _with_test_figures(results: list[dict], checkpoint: str) -> list[dict]:
    """The runs that have test figures at `checkpoint`; the others are left out with a warning: runs
    made with eval.test=false (validation only) and runs without that checkpoint (no validation split,
    or a run whose files were lost and whose best_val figures alone were recorded)."""
    kept = []
    for r in results:
        where = r.get("_dir", r.get("run", r["method"]))
        if r.get("test_evaluated") is False:
            _warn(f"skipped {where}: validation only (eval.test=false), no test figures")
        elif checkpoint not in r["checkpoints"]:
            _warn(f"skipped {where}: no {checkpoint!r} checkpoint figures (it holds "
                  f"{', '.join(r['checkpoints']) or 'none'})")
        else:
            kept.append(r)
    if results and not kept:
        raise ValueError(f"no run given has {checkpoint!r} test figures"
                         + ("; `--checkpoint last` tables the last epoch of runs trained without a validation split"
                            if checkpoint == "best_val" else ""))
    return kept


def _row_order(key: tuple) -> tuple:
    """Rows by dataset, imbalance factor as a number (10 before 100), method, model, setting."""
    dataset, imb, *rest = key
    return (str(dataset), float(imb or 0), *map(str, rest))


def _setting_of(result: dict) -> tuple:
    """What makes runs seeds of one row: (dataset, imbalance factor, method, model, stored setting)."""
    return (result["dataset"], result.get("imb_factor"), result["method"],
            (result.get("settings") or {}).get("model.name", ""), result.get("setting", ""))


def summarize(results: list[dict], checkpoint: str = "best_val") -> list[dict]:
    """One row per setting (the runs that store one "setting" fingerprint: their stored settings
    agree but for the seed and runtime keys): metrics as mean ± std over its seeds, each over the
    seeds that have it. Where a method appears in several settings, row["differs_values"] lists the
    stored settings ("key=value", a second stage's first-stage ones as "first_stage.key") that set
    each apart, and row["differs"] joins them (shown beside the method in the markdown table). Runs
    without test figures at `checkpoint` are left out with a warning (_with_test_figures)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in _with_test_figures(results, checkpoint):
        groups[_setting_of(r)].append(r)
    rows, first_runs = [], []
    for (dataset, imb, method, model, setting), runs in sorted(groups.items(), key=lambda kv: _row_order(kv[0])):
        seeds = [r["seed"] for r in runs]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"runs {', '.join(r['_dir'] for r in runs)} repeat a seed of one setting "
                             f"({method}, seeds {sorted(seeds)}): the same experiment run twice (two demos, say), "
                             "or one folder given twice; name the folders to report so that each seed is one run")
        runs = sorted(runs, key=lambda r: r["seed"])  # row["values"] lists follow row["seed_list"]

        def pick(variant, metric, runs=runs):  # bound now: defined in the loop
            return [(r["checkpoints"][checkpoint].get(variant) or {}).get(metric) for r in runs]

        row = {"dataset": dataset, "imb_factor": imb, "method": method, "model": model, "setting": setting,
               "seeds": len(runs), "seed_list": sorted(seeds), "checkpoint": checkpoint, "differs": "",
               "differs_values": []}
        # per-seed figures (None where a run lacks one) behind each mean ± std string, in seed order
        row["values"] = {f"{variant}.{metric}": pick(variant, metric)
                         for variant in VARIANTS for metric in METRICS}
        row["values"]["best_on_test"] = [(r.get("best_test_epoch") or {}).get("top1") for r in runs]
        shifted = [r.get("shifted", {}).get(checkpoint, {}) for r in runs]
        priors = {p for s in shifted for p in s}
        row["values"].update({f"shifted.{p}.{col}": [s.get(p, {}).get(col) for s in shifted]
                              for p in priors for col in SHIFTED_COLUMNS})
        for key, values in row["values"].items():
            row[key] = _mean_std(values)
        row["train_seconds"] = [r["train_time_s"] for r in runs if r.get("train_time_s") is not None]
        row["data"] = _data_identity(runs[0]["settings"]) if runs[0].get("settings") else {}  # {}: none stored
        rows.append(row)
        first_runs.append(runs[0])
    _label_differences(rows, first_runs)
    return rows


def validation_table(results: list[dict]) -> str:
    """The settings ranked by their best validation top-1 (mean ± std over seeds), best first: what a
    sweep chooses on, with the selected weights' validation accuracy by shot group where the runs
    stored it. Validation-only runs (eval.test=false) count too; no test figure is shown."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[_setting_of(r)].append(r)
    rows, first_runs = [], []
    for (dataset, imb, method, model, setting), runs in groups.items():
        values = [r["best_val"]["top1"] for r in runs]
        shots = {g: _mean_std([(r.get("validation") or {}).get(g) for r in runs]) for g in ("many", "medium", "few")}
        rows.append({"dataset": dataset, "imb_factor": imb, "method": method, "model": model, "setting": setting,
                     "seeds": len(runs), "mean": statistics.mean(values), "best_val": _mean_std(values), **shots,
                     "epochs": [r["best_val"]["epoch"] for r in runs], "differs": "",
                     "train_seconds": [r["train_time_s"] for r in runs if r.get("train_time_s") is not None]})
        first_runs.append(runs[0])
    _label_differences(rows, first_runs)
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["mean"])
    unit, per_unit = _time_unit(rows)
    lines = ["| dataset | method | model | seeds | best validation top-1 | many | medium | few | at epoch | "
             f"train {unit} / run |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in (rows[i] for i in order):
        lines.append(f"| {_setting_name(r)} | {_method_label(r)} | {r['model']} | {r['seeds']} | {r['best_val']} | "
                     f"{r['many']} | {r['medium']} | {r['few']} | {', '.join(map(str, r['epochs']))} | "
                     f"{_mean_std([t / per_unit for t in r['train_seconds']])} |")
    lines += ["", "Best validation top-1: each run's checkpoint selected on validation, mean ± std over seeds; "
              "many / medium / few: its validation accuracy by shot group (- where the run did not store it); "
              "train time: from each run's results.json, on whatever machine and load it ran; "
              "the test split plays no part here."]
    return "\n".join(lines) + "\n"


# SPEC section 6: the published top-1 (%) per (dataset, CIFAR imbalance factor or None) and method
# (both GALA modes face GALA's number; ALA's published recipe is ALA with DRW; CE with DRW is not
# CE). Mostly best-epoch-on-test, single seed.
PUBLISHED: dict[tuple[str, float | None], dict[str, str]] = {
    ("cifar100-lt", 100): {"ce": "39.1", "la": "43.9", "bs": "45.1", "ldam-drw": "42.0", "gcl": "48.7",
                           "gala": "52.1 (+PR 52.3)"},
    ("cifar100-lt", 200): {"gcl": "44.9", "gala": "48.0 (+PR 48.5)"},
    ("cifar100-lt", 50): {"gala": "56.0 (+PR 56.5)"},
    ("cifar100-lt", 10): {"gala": "63.8 (+PR 64.2)"},
    ("imagenet-lt", None): {"la": "51.3", "gcl": "54.9", "ala": "53.3 (ResNeXt-50)", "gala": "53.4 (+PR 54.9)"},
    ("inat2018", None): {"gcl": "72.0", "ala": "70.7", "gala": "71.2 (+PR 73.3)"},
    ("places-lt", None): {"gcl": "40.6", "ala": "40.1", "gala": "41.0 (+PR 41.4)"},
}


def published_figure(dataset: str, imb_factor, method: str) -> str:
    """The published top-1 for this setting and method (SPEC section 6), or "-"."""
    table = PUBLISHED.get((dataset, float(imb_factor) if imb_factor else None), {})
    base = method.split("(")[0]  # la(tau=...) is still LA
    family = {"gala-paper": "gala", "gala-reference": "gala", "ala-drw": "ala", "gcl-crt": "gcl"}.get(base, base)
    return table.get(family, "-")


def _setting_name(row: dict) -> str:
    imb = row.get("imb_factor")
    return row["dataset"] + (f" IF{imb:g}" if imb and "cifar" in row["dataset"] else "")


def run_title(results: dict) -> str:
    """'gala-reference on cifar100-lt IF50 (seed 1)': one run's results.md heading and plot title,
    naming the setting as the tables do so that one setting's figures are not taken for another's."""
    return f"{results['method']} on {_setting_name(results)} (seed {results['seed']})"


def _method_label(row: dict) -> str:
    return row["method"] + (f" [{row['differs']}]" if row.get("differs") else "")


def summary_labels(rows: list[dict]) -> list[str]:
    """One name per bar of the summary chart, as the table tells the rows apart: the method, the
    stored settings that set it apart from the method's other rows, the model where several appear, and
    the dataset (with its imbalance factor) where the rows span several."""
    several_settings = len({_setting_name(r) for r in rows}) > 1
    several_models = len({r.get("model") for r in rows}) > 1
    labels = []
    for r in rows:
        parts = ([_setting_name(r)] if several_settings else []) + [r["method"]]
        if several_models:
            parts.append(str(r.get("model")))
        parts.extend(r.get("differs_values", []))  # a line per setting: one long line runs off the chart
        labels.append("\n".join(parts))
    return labels


def bar_labels(rows: list[dict]) -> list[str]:
    """The summary chart's bar names: summary_labels plus the number of seeds behind each bar, so
    a one-seed bar (no error bar) is not read as a mean with no spread."""
    return [f"{name}\n({r['seeds']} seed{'s' if r['seeds'] != 1 else ''})"
            for name, r in zip(summary_labels(rows), rows)]


def _time_unit(rows: list[dict]) -> tuple[str, float]:
    """The training-time column's unit: hours for real runs, so that tables of them compare, but
    minutes or seconds where every run is shorter (a demo run's 0.00 h says nothing)."""
    longest = max((t for r in rows for t in r.get("train_seconds", [])), default=3600.0)
    if longest >= 3600:
        return "h", 3600.0
    return ("min", 60.0) if longest >= 60 else ("s", 1.0)


def markdown_table(rows: list[dict], published: dict | None = None, shifted: tuple[str, ...] = ()) -> str:
    """Method, seeds, top-1 / many / medium / few raw and with PR (tau on val), transductive PR,
    post-hoc logit adjustment (tau on val), best-epoch-on-test, training time per run (in hours,
    minutes or seconds, by the table's longest run), and the
    published figure: from `published` ({method: figure}) when given, else from PUBLISHED (SPEC
    section 6). `shifted` names test priors (forward-50, ..., backward-50) whose top-1 (raw, +PR,
    +LA toward the known prior, +LA toward its EM estimate) follow as extra columns, from each run's
    `longtail eval --shifted-priors` file. A figure that only k of a row's seeds have is marked "(n=k)"; the note under the
    table names the checkpoint the figures come from (selected on validation, or the last epoch)."""
    unit, per_unit = _time_unit(rows)
    counted = []  # figures averaged over fewer seeds than their row has

    def noted(text: str, n: int, r: dict, key: str) -> str:
        """`text` with "(n=k)" where only k of the row's seeds have the figure."""
        if 0 < n < r["seeds"]:
            counted.append(key)
            return f"{text} (n={n})"
        return text

    def cell(r: dict, key: str) -> str:
        values = (r.get("values") or {}).get(key) or []
        return noted(r[key], sum(v is not None for v in values), r, key)

    def hours(r: dict) -> str:
        seconds = r.get("train_seconds", [])
        return noted(_mean_std([t / per_unit for t in seconds]), len(seconds), r, "train_seconds")

    head = ("| dataset | method | model | seeds | top-1 | many | medium | few | +PR top-1 | +PR many | +PR medium | "
            f"+PR few | PR transductive | +post-hoc LA top-1 | best epoch on TEST | train {unit} / run | published |"
            + "".join(f" {p} {label} |" for p in shifted for label in SHIFTED_COLUMNS.values()))
    shifted_keys = [f"shifted.{p}.{col}" for p in shifted for col in SHIFTED_COLUMNS]
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        pub = (published.get(r["method"], "-") if published is not None
               else published_figure(r["dataset"], r.get("imb_factor"), r["method"]))
        figures = " | ".join(cell(r, key) for key in ("raw.top1", "raw.many", "raw.medium", "raw.few", "pr.top1",
                                                       "pr.many", "pr.medium", "pr.few", "pr_transductive.top1",
                                                       "la.top1", "best_on_test"))
        extra = "".join(f" {cell(r, key) if key in r['values'] else '-'} |" for key in shifted_keys)
        lines.append(f"| {_setting_name(r)} | {_method_label(r)} | {r.get('model', '')} | {r['seeds']} | {figures} | "
                     f"{hours(r)} | {pub} |{extra}")
    checkpoints = {r.get("checkpoint", "best_val") for r in rows}
    # the figures are of the checkpoint the rows were summarised at: only best_val was selected (on validation)
    which = ("checkpoint selected on validation" if checkpoints <= {"best_val"} else
             "last-epoch checkpoint (no selection)" if checkpoints == {"last"} else
             "checkpoints " + ", ".join(sorted(checkpoints)))
    lines.append("")
    lines.append(f"Top-1 and groups: {which}, mean ± std over seeds. PR: prediction "
                 "re-balancing with the class marginal and tau from validation. PR transductive: the paper's "
                 "protocol (marginal from the test set, published tau). Post-hoc LA: logits minus tau log(class "
                 "prior), tau from validation. Best epoch on TEST: selected on the test "
                 f"set as papers report it; not an honest estimate. Train {unit} / run: training wall time (evaluation "
                 "excluded) from each run's results.json, on whatever machine and load it ran."
                 + (" (n=k): the mean of the k seeds of the row that have the figure (the others' results.json "
                    "lack it)." if counted else "")
                 + (" Under a test prior (forward-R: head classes R times as frequent as tail ones, backward-R the "
                    "reverse): the class-weighted top-1 over the balanced test set; +LA known / EM: post-hoc logit "
                    "adjustment toward the true prior / its EM estimate from the test predictions." if shifted else ""))
    return "\n".join(lines) + "\n"


def shifted_by_prior_table(rows: list[dict], priors: tuple[str, ...]) -> str:
    """Top-1 under shifted test priors with one line per prior and, per row of `rows`, its four figures
    (raw, +PR, +LA toward the known prior, +LA toward its EM estimate; mean ± std over seeds): the
    methods side by side as the prior moves from head-heavy to tail-heavy."""
    several = len({_setting_name(r) for r in rows}) > 1
    names = [f"{_setting_name(r)} {_method_label(r)}" if several else _method_label(r) for r in rows]
    head = "| test prior |" + "".join(f" {n} {label} |" for n in names for label in SHIFTED_COLUMNS.values())
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for p in priors:
        cells = [r[f"shifted.{p}.{col}"] if f"shifted.{p}.{col}" in r["values"] else "-"
                 for r in rows for col in SHIFTED_COLUMNS]
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    seeds = ", ".join(f"{n} {r['seeds']}" for n, r in zip(names, rows))
    lines += ["", f"Class-weighted top-1 over the balanced test set, weights proportional to the test prior "
              f"(forward-R: head classes R times as frequent as tail ones, backward-R the reverse); checkpoint and "
              f"taus chosen on validation; +LA known / EM: post-hoc logit adjustment toward the true prior / its EM "
              f"estimate from the test predictions. Seeds: {seeds}."]
    return "\n".join(lines) + "\n"


def _baseline(group: list[dict], against: str) -> list[dict]:
    """The rows of one setting that `against` names: the full label as the table prints it, else the
    method name, else the name before "(" (`la` for `la(tau=1.0)`)."""
    for matches in (lambda r: _method_label(r) == against, lambda r: r["method"] == against,
                    lambda r: r["method"].split("(")[0] == against):
        found = [r for r in group if matches(r)]
        if found:
            return found
    return []


def _paired_differences(row: dict, base: dict, variant: str, metric: str) -> list[float]:
    mine = dict(zip(row["seed_list"], row["values"][f"{variant}.{metric}"]))
    theirs = dict(zip(base["seed_list"], base["values"][f"{variant}.{metric}"]))
    return [mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs))
            if mine[s] is not None and theirs[s] is not None]


def paired_table(rows: list[dict], against: str, metric: str = "top1") -> str:
    """Each row minus the `against` row of its setting (dataset, imbalance factor and model), seed
    by seed over the seeds both have: mean ± sample std of the differences, raw and with PR (tau on
    validation), and at how many of those seeds the row's raw figure is higher. Pairing by seed
    removes the spread that a seed puts on both methods alike (its data order, initialisation and
    augmentation draws). Settings without such a row are named under the table, and so are rows whose
    data settings (_data_identity: validation split, list names, limits) differ from the baseline's."""
    if not rows:
        raise ValueError("no rows to pair: the table is empty")
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r.get("imb_factor"), r.get("model", ""))].append(r)
    several_models = len({key[2] for key in groups}) > 1
    lines = [f"Paired by seed against {against} ({metric}, checkpoint {rows[0]['checkpoint']}; "
             "+PR: tau and marginal from validation; n: seeds behind a difference):", "",
             "| setting | method | shared seeds | difference | +PR difference | raw higher at |",
             "|---|---|---|---|---|---|"]
    missing, ambiguous, other_data = [], [], []
    for (dataset, imb, model), group in groups.items():
        name = _setting_name(group[0]) + (f" {model}" if several_models else "")
        bases = _baseline(group, against)
        if len(bases) != 1:
            (ambiguous if bases else missing).append(
                f"{name} ({'; '.join(_method_label(r) for r in bases)})" if bases else name)
            continue
        base = bases[0]
        for r in group:
            if r is base:
                continue
            differ = _data_differences(r.get("data") or {}, base.get("data") or {})
            if differ:
                other_data.append(f"{name} {_method_label(r)} ("
                                  + ", ".join(f"{k}={r['data'].get(k)} vs {base['data'].get(k)}" for k in differ) + ")")
                continue
            raw = _paired_differences(r, base, "raw", metric)
            pr = _paired_differences(r, base, "pr", metric)
            shared = sorted(set(r["seed_list"]) & set(base["seed_list"]))
            higher = f"{sum(d > 0 for d in raw)} of {len(raw)}" if raw else "-"
            lines.append(f"| {name} | {_method_label(r)} | {' '.join(map(str, shared)) or 'none'} | "
                         f"{_mean_std(raw, '+')} (n={len(raw)}) | {_mean_std(pr, '+')} (n={len(pr)}) | {higher} |")
    if len(missing) == len(groups):
        raise ValueError(f"--against {against!r} names no row of the table; its methods are: "
                         + "; ".join(sorted({_method_label(r) for r in rows})))
    if ambiguous:
        raise ValueError(f"--against {against!r} matches several rows of one setting; give the whole label: "
                         + "; ".join(ambiguous))
    if missing:
        lines += ["", f"No {against} row to pair with in: {', '.join(missing)}."]
    if other_data:
        lines += ["", f"Not paired with {against}: trained or evaluated on other images, so a seed's difference "
                  f"would mix the methods with their data: {'; '.join(other_data)}."]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path) -> Path:
    """The summary as numbers for a spreadsheet or pandas: one line per row of the markdown table,
    each figure (training seconds too) as its mean and sample std over seeds (std empty for one
    seed, both empty where no run has the figure), the seeds, the checkpoint the figures come from
    (best_val or last) and the published figure as SPEC section 6 words it (text)."""
    path = Path(path)
    keys = [f"{v}.{m}" for v in VARIANTS for m in METRICS] + ["best_on_test"]
    head = ["dataset", "imb_factor", "method", "differs", "model", "seeds", "seed_list"]
    head += [f"{k.replace('.', '_')}_{stat}" for k in keys for stat in ("mean", "std")]
    head += ["train_seconds_mean", "train_seconds_std", "checkpoint", "published"]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(head)
        for r in rows:
            imb = r.get("imb_factor")
            line = [r["dataset"], f"{imb:g}" if imb else "", r["method"], r.get("differs", ""), r.get("model", ""),
                    r["seeds"], " ".join(map(str, r["seed_list"]))]
            for k in keys:
                values = [v for v in r["values"][k] if v is not None]
                line += [round(statistics.mean(values), 4) if values else "",
                         round(statistics.stdev(values), 4) if len(values) > 1 else ""]
            seconds = r.get("train_seconds") or []
            line += [round(statistics.mean(seconds), 1) if seconds else "",
                     round(statistics.stdev(seconds), 1) if len(seconds) > 1 else "", r.get("checkpoint", ""),
                     published_figure(r["dataset"], r.get("imb_factor"), r["method"])]
            out.writerow(line)
    return path


def plot_per_class(curves: dict[str, list], class_counts, path, title: str = "") -> Path:
    """Per-class test accuracy against training count (classes sorted by count, log-scale x)."""
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4))
    order = sorted(range(len(class_counts)), key=lambda j: -class_counts[j])
    xs = [class_counts[j] for j in order]
    for label, acc in curves.items():
        ys = [acc[j] if acc[j] is not None else float("nan") for j in order]
        ax.plot(xs, ys, marker=".", linestyle="none", alpha=0.7, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class")
    ax.set_ylabel("test accuracy of the class (%)")
    for threshold in (20, 100):
        ax.axvline(threshold, color="grey", linewidth=0.5)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_summary(rows: list[dict], path) -> Path:
    """Bar chart of top-1 (raw and +PR) per row of the table, with the std over seeds as error bars."""
    path = Path(path)
    labels = bar_labels(rows)
    # a bar named by several settings gets a tall label: set such labels upright, a line per
    # value side by side, and make the figure taller by the longest line so the bars keep their room
    most_lines = max(label.count("\n") + 1 for label in labels)
    upright = most_lines > 3
    longest = max(len(line) for label in labels for line in label.split("\n"))
    per_bar = max(1.1, 0.2 * most_lines) if upright else 1.1  # inches: wide enough for neighbours not to touch
    fig, ax = plt.subplots(figsize=(max(5, len(rows) * per_bar), 4 + (0.06 * longest if upright else 0)))

    def mean_and_std(s):  # "51.00 ± 1.41", "49.00" or "-"
        if s in ("-", None):
            return 0.0, 0.0
        parts = s.split(" ± ")
        return float(parts[0]), float(parts[1]) if len(parts) > 1 else 0.0

    xs = range(len(rows))
    for offset, key, label in ((-0.2, "raw.top1", "raw"), (0.2, "pr.top1", "+PR (tau on val)")):
        means, stds = zip(*(mean_and_std(r[key]) for r in rows))
        bars = ax.bar([x + offset for x in xs], means, width=0.4, yerr=stds if any(stds) else None, capsize=3,
                      label=label)
        # the bars of close methods look equal from 0 to 50: print each value on its bar
        ax.bar_label(bars, labels=[f"{m:.1f}" if m else "" for m in means], fontsize=7, padding=2)
    ax.set_xticks(list(xs), labels, rotation=90 if upright else 30, ha="center" if upright else "right", fontsize=8)
    ax.margins(y=0.1)  # room above the tallest bar for its printed value
    ax.set_ylabel("test top-1 (%)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)  # above the bars
    fig.tight_layout()
    # "tight" grows the image to hold tall tick labels (rows told apart by several settings),
    # which tight_layout alone cannot fit into the figure size and would clip
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
