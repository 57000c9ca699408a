"""The `longtail` command: demo | train | eval | report | data | predict | export | sweep."""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

from longtail import __version__
from longtail.shipped import CONFIG_DIR, resolve_config_path  # noqa: F401  (CONFIG_DIR: part of the CLI's API)

DEMO_METHODS = [  # (run name, loss overrides)
    ("ce", ["loss.name=ce"]),
    ("la", ["loss.name=la"]),
    ("ala", ["loss.name=ala"]),
    ("gala", ["loss.name=gala", "loss.mode=reference"]),
]

DEMO_CONFIG = {
    "data": {"name": "digits-lt", "imb_factor": 20, "image_size": 8, "augment": "crop_flip", "val_per_class": 10},
    "model": {"name": "convnet"},
    "optim": {"epochs": 30, "batch_size": 32, "lr": 0.05, "weight_decay": 5e-4, "warmup_epochs": 2,
              "schedule": "cosine"},
    "eval": {"every": 1, "batch_size": 1024},
    "precision": "fp32",
    "channels_last": False,
    "progress": "quiet",
    "threads": 1,  # a net this small gains nothing from a second thread
}


def cmd_train(args) -> int:
    from longtail.config import load_config
    from longtail.rundir import resume_config
    from longtail.train import train

    if args.resume:
        if args.config and "=" not in args.config:
            raise ValueError(f"--resume continues the run with its saved config; give no CONFIG ({args.config!r}), "
                             "only runtime overrides such as threads=2")
        if args.run_dir:
            raise ValueError("--resume RUN continues in RUN itself; --run-dir does not go with it")
        # the positional CONFIG slot may hold the first override: `--resume RUN threads=2`
        overrides = ([args.config] if args.config else []) + list(args.overrides)
        run_dir = train(resume_config(args.resume, overrides), run_dir=args.resume, resume=True)
    elif not args.config:
        raise ValueError("give a CONFIG (YAML path or name) or --resume RUN_DIR")
    else:
        run_dir = train(load_config(resolve_config_path(args.config), args.overrides), run_dir=args.run_dir)
    print(f"run folder: {run_dir}")
    return 0


def _eval_from_logits(run_dir: Path, args):
    """The post-hoc figures of a finished run folder without checkpoints, from its stored logits."""
    from longtail.evaluation import posthoc_report
    from longtail.rundir import load_logits

    results = json.loads((run_dir / "results.json").read_text())
    preds = load_logits(run_dir)
    if "test" not in preds:
        raise ValueError(f"{run_dir} is a validation-only run (eval.test=false) without checkpoints: its stored "
                         "logits hold no test split; train the setting with eval.test=true to test it")
    val = preds.get("val", (None, None))
    counts = results["data"]["class_counts"]
    tau_grid = results["config"]["eval"]["tau_grid"]
    pr_tau = args.pr_tau if args.pr_tau is not None else results["config"]["eval"]["published_pr_tau"]
    report = posthoc_report(*val, *preds["test"], counts, tau_grid, pr_tau)
    evaluated = {"method": results["method"], "checkpoint": str(run_dir / "logits.npz"),
                 "note": "from the stored float16 logits of the selected checkpoint", "checkpoints": {"logits": report}}
    return evaluated, preds, counts, tau_grid, run_dir / "eval-logits.json"


def _eval_checkpoint(args):
    from longtail.data import load_benchmark
    from longtail.distributed import pick_device
    from longtail.evaluation import evaluate_model, predict_split
    from longtail.models import PRETRAINED_MEAN, PRETRAINED_STD
    from longtail.rundir import load_model, load_run, run_precision
    from longtail.train import method_name

    cfg, ckpt, path = load_run(args.target, args.overrides)
    if args.pr_tau is not None:
        cfg.eval.published_pr_tau = args.pr_tau
    device = pick_device(cfg.device)
    norm = (PRETRAINED_MEAN, PRETRAINED_STD) if cfg.model.pretrained else None
    # a validation-only run (eval.test=false) is evaluated on validation alone: its test images stay
    # unread unless the command asks for them (eval.test=true)
    bench = load_benchmark(cfg.data, test=cfg.eval.test, lists_dir=path.parent, normalisation=norm)
    model = load_model(cfg, ckpt, path, bench.num_classes, bench.channels, device)
    # the run's own numerics: its precision and memory format, as its final evaluation had them
    precision = run_precision(cfg, path.parent, device)
    evaluated = {"method": method_name(cfg), "checkpoint": str(path), "checkpoints": {}}
    if cfg.eval.test:
        evaluated["checkpoints"][path.stem], preds = evaluate_model(model, bench, cfg, device, precision)
    elif bench.val is None:
        raise ValueError(f"{path} has no validation split to evaluate and eval.test=false leaves out the test split; "
                         "set eval.test=true")
    else:
        evaluated["test_evaluated"] = False
        preds = {"val": predict_split(model, bench.val, bench, cfg, device, precision)}
    return evaluated, preds, bench.class_counts, cfg.eval.tau_grid, path.parent / f"eval-{path.stem}.json"


def cmd_eval(args) -> int:
    from longtail.evaluation import report_markdown
    from longtail.shifted import markdown_shifted_table, shifted_prior_table

    target = Path(args.target)
    stored_only = (target.is_dir() and not any((target / n).exists() for n in ("best.pt", "last.pt"))
                   and (target / "logits.npz").exists())
    if stored_only and args.overrides:
        raise ValueError(f"{target} has no checkpoint, only its stored logits: overrides cannot change them")
    results, preds, counts, tau_grid, out = _eval_from_logits(target, args) if stored_only else _eval_checkpoint(args)
    if "val" in preds:  # as results.json holds them: the checkpoint's validation figures by shot group
        from longtail.metrics import evaluate

        results["validation"] = evaluate(*preds["val"], counts)
    if "test" not in preds:
        if args.shifted_priors:
            raise ValueError(f"{target} is a validation-only run (eval.test=false): --shifted-priors scores the "
                             "test split; add eval.test=true to score it")
        v = results["validation"]
        groups = ", ".join(f"{g} {'-' if v[g] is None else format(v[g], '.2f')}" for g in ("many", "medium", "few"))
        print(f"Validation only (eval.test=false; eval.test=true scores test too): top-1 {v['top1']:.2f}, {groups}")
    else:
        print(report_markdown(results))
    if args.shifted_priors:
        if "val" not in preds:
            raise ValueError("--shifted-priors chooses its taus on validation, and this run has no validation split")
        rows = shifted_prior_table(*preds["val"], *preds["test"], counts, tau_grid)
        next(iter(results["checkpoints"].values()))["shifted"] = rows
        print("Top-1 under shifted test priors (class-weighted over the balanced test set; taus on validation):\n")
        print(markdown_shifted_table(rows))
    out.write_text(json.dumps(results, indent=2))
    print(f"written: {out}")
    return 0


def cmd_report(args) -> int:
    from longtail.report import (
        ALL_SHIFTED,
        DEFAULT_SHIFTED,
        load_results,
        markdown_table,
        paired_table,
        plot_summary,
        shifted_by_prior_table,
        summarize,
        validation_table,
        write_csv,
    )

    if args.validation:
        print(validation_table(load_results(args.runs)))
        return 0
    rows = summarize(load_results(args.runs), checkpoint=args.checkpoint)
    if args.by_prior:
        text = shifted_by_prior_table(rows, tuple(args.shifted or ALL_SHIFTED))
    else:
        text = markdown_table(rows, shifted=() if args.shifted is None else tuple(args.shifted or DEFAULT_SHIFTED))
    if args.against and not args.by_prior:
        text += "\n" + paired_table(rows, args.against)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        print(f"written: {args.out}")
    if args.csv:
        write_csv(rows, args.csv)
        print(f"csv: {args.csv}")
    if args.plot:
        plot_summary(rows, args.plot)
        print(f"plot: {args.plot}")
    return 0


def cmd_demo(args) -> int:
    from longtail.config import apply_overrides, config_from_dict
    from longtail.report import load_results, markdown_table, paired_table, plot_summary, summarize, write_csv
    from longtail.train import train

    seeds = list(range(args.seed, args.seed + args.seeds))
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise NotADirectoryError(f"--out {args.out} is a file; give a folder (it is created if missing)")
    out = Path(args.out) / time.strftime("demo-%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    # Every method at one seed before the next seed, so a cut-short demo still compares all four.
    for seed in seeds:
        for name, overrides in DEMO_METHODS:
            run_name = name if len(seeds) == 1 else f"{name}_s{seed}"
            data = copy.deepcopy(DEMO_CONFIG)
            data.update({"out_dir": str(out), "run_name": run_name, "seed": seed})
            extra = [f"optim.epochs={args.epochs}"] if args.epochs is not None else []
            cfg = config_from_dict(apply_overrides(data, overrides + extra))
            t = time.perf_counter()
            print(f"== training {run_name} on the embedded long-tailed digits ...", flush=True)
            train(cfg, run_dir=out / run_name)
            print(f"== {run_name} done in {time.perf_counter() - t:.1f} s", flush=True)
    rows = summarize(load_results([out]))
    table = markdown_table(rows)
    if len(seeds) > 1:
        table += "\n" + paired_table(rows, "ce")
    (out / "summary.md").write_text(table)
    write_csv(rows, out / "summary.csv")
    plot_summary(rows, out / "summary.png")
    print("\n" + table)
    if len(seeds) == 1:
        print("One seed: on 500 test images this does not rank LA, ALA and GALA; `--seeds 3` gives mean ± std.")
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; runs, per-class plots (per_class.png), "
          f"summary.md, summary.csv and summary.png are in {out}")
    return 0


def cmd_data(args) -> int:
    if args.data_cmd == "check":
        path = Path(args.path)
        if path.is_dir() and args.root is None:
            from longtail.data.folder import check_folder

            report = check_folder(path, decode=not args.no_decode)
        else:
            from longtail.data.listfile import check_list

            if args.root is None:
                raise ValueError(f"{path} is a list file: give the folder its paths are relative to with --root")
            report = check_list(args.root, path, num_classes=args.num_classes, decode=not args.no_decode)
        print(report.summary())
        return 0 if report.ok else 1
    from longtail.config import DataConfig
    from longtail.data import load_benchmark

    b = load_benchmark(DataConfig(name=args.name, root=args.root, imb_factor=args.imb_factor))
    counts = b.class_counts
    print(f"{b.name}: {b.num_classes} classes, {sum(counts)} training images "
          f"(max {max(counts)}, min {min(counts)}, imbalance {max(counts) / min(counts):.1f}); "
          f"val {len(b.val) if b.val is not None else 0}, test {len(b.test)}")
    return 0


def cmd_predict(args) -> int:
    """Exit status 0 when every image was predicted; 1 when some could not be decoded: the CSV holds the
    others, and each unreadable file is listed on stderr after the summary with its reason; 2 for bad
    input (no CSV written). Files that are not images (by extension) are listed too, status unchanged."""
    from longtail.predict import adjustment, find_images, load_trained, predict_images, write_predictions_csv

    run = load_trained(args.run)
    files, skipped = find_images(args.paths)
    if not files:
        raise FileNotFoundError(f"no image files among {', '.join(args.paths)} (.jpg .jpeg .png .webp .bmp)")
    offsets, name, tau = adjustment(run, args.adjust, args.prior)
    t0 = time.perf_counter()
    rows, failures = predict_images(run.model, files, image_size=run.image_size, resize=run.resize, mean=run.mean,
                                    std=run.std, adjustment=offsets, batch_size=args.batch_size, top_k=args.top_k,
                                    workers=args.workers)
    seconds = time.perf_counter() - t0
    write_predictions_csv(rows, run.classes, args.out, args.top_k)
    print(f"predicted {len(rows)} images in {seconds:.1f} s ({len(rows) / max(seconds, 1e-9):.0f} images/s), "
          f"adjustment {name}" + (f" (tau {tau})" if tau is not None else "") + f", prior {args.prior}: {args.out}")
    for path, why in skipped + failures:
        print(f"not predicted: {path}: {why}", file=sys.stderr)
    return 0 if not failures else 1


def cmd_export(args) -> int:
    from longtail.predict import adjustment, export_model, load_trained

    run = load_trained(args.run)
    offsets, name, tau = adjustment(run, args.adjust, args.prior)
    model_path, side = export_model(run.model, args.out, fmt=args.format, classes=run.classes,
                                    input_size=run.image_size, mean=run.mean, std=run.std, adjustment=offsets,
                                    adjust_name=name, tau=tau, resize=run.resize)
    print(f"exported {args.format}: {model_path} (classes and input size in {side})")
    return 0


def cmd_sweep(args) -> int:
    from longtail.sweep import read_spec, run_all

    final = run_all(read_spec(args.spec, args.overrides), stage=args.stage, jobs=args.jobs, dry_run=args.dry_run)
    if final and all(run.finished for run in final) and not args.dry_run:
        from longtail.report import load_results, markdown_table, summarize

        print(markdown_table(summarize(load_results([run.folder for run in final]))))
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _apply_options(p: argparse.ArgumentParser) -> None:
    from longtail.predict import ADJUSTMENTS

    p.add_argument("--adjust", choices=ADJUSTMENTS, default="auto",
                   help="post-hoc adjustment: auto (whichever scored best on validation), pr, la or none")
    p.add_argument("--prior", default="uniform", metavar="uniform|train|FILE",
                   help="the class frequencies expected where the model is used: uniform (default), train (the "
                   "training frequencies) or a file of `class,weight` lines")


def _add_demo(sub) -> None:
    d = sub.add_parser("demo", help="train CE, LA, ALA and GALA on the embedded long-tailed digits and compare")
    d.add_argument("--out", default="runs", help="where the run folders go (default: runs)")
    d.add_argument("--epochs", type=_positive_int, default=None, help="epochs per method (default 30)")
    d.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    d.add_argument("--seeds", type=_positive_int, default=1,
                   help="how many seeds per method (seed, seed+1, ...); the table gives mean ± std (default 1)")
    d.set_defaults(func=cmd_demo)


def _add_train(sub) -> None:
    from longtail.rundir import RESUMABLE_KEYS

    t = sub.add_parser("train", help="train from a YAML config with key=value overrides")
    t.add_argument("config", nargs="?", help="YAML file, or the name of a shipped config")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. loss.name=gala optim.lr=0.05 seed=1 "
                   "(before or after the options)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run (its saved config; only "
                   f"settings that do not change the result may be overridden: {', '.join(RESUMABLE_KEYS)})")
    t.add_argument("--run-dir", help="run folder (default: out_dir/run_name or a timestamped name)")
    t.set_defaults(func=cmd_train)


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="re-evaluate a run folder or checkpoint, with post-hoc adjustments")
    e.add_argument("target", help="run folder (uses best.pt, else last.pt, else its stored logits) or a .pt file")
    e.add_argument("overrides", nargs="*", help="overrides, e.g. data.root=/elsewhere eval.tau_grid=[0,1,2]")
    e.add_argument("--pr-tau", type=float, default=None, help="tau for the transductive PR figure")
    e.add_argument("--shifted-priors", action="store_true",
                   help="also top-1 under shifted test priors: forward-50 ... uniform ... backward-50, raw, +PR, "
                   "+post-hoc LA toward the known prior and toward its EM estimate")
    e.set_defaults(func=cmd_eval)


def _add_report(sub) -> None:
    r = sub.add_parser("report", help="merge run folders into one markdown table (mean ± std over seeds)")
    r.add_argument("runs", nargs="+", help="run folders, results.json files, or folders searched for runs at any depth")
    r.add_argument("--out", help="also write the table to this markdown file")
    r.add_argument("--plot", help="also write a bar chart PNG here")
    r.add_argument("--csv", help="also write the figures as numbers (mean and std columns) to this CSV file")
    r.add_argument("--against", metavar="METHOD",
                   help="also compare every row with this method (as the table names it, e.g. ce), seed by seed, "
                   "within each setting (dataset, imbalance factor, model) among runs on the same images (validation split, "
                   "lists, limits); settings without it, and rows on other images, are named")
    r.add_argument("--shifted", nargs="*", metavar="PRIOR", default=None,
                   help="add top-1 under these shifted test priors (default forward-50 uniform backward-50) as "
                   "columns, from each run's `longtail eval --shifted-priors`")
    r.add_argument("--by-prior", action="store_true",
                   help="instead: one line per shifted test prior (those of --shifted, else all eleven) with each "
                   "method's raw, +PR, +LA known and +LA EM top-1 side by side")
    r.add_argument("--validation", action="store_true",
                   help="instead: the settings ranked by best validation top-1, validation-only runs included "
                   "(what `longtail sweep` chooses on)")
    r.add_argument("--checkpoint", default="best_val", choices=("best_val", "last"),
                   help="best_val: the checkpoint selected on validation (default); last: the final epoch; runs "
                   "without it, and validation-only runs, are left out with a warning")
    r.set_defaults(func=cmd_report)


def _add_data(sub) -> None:
    da = sub.add_parser("data", help="check list files and image folders, describe benchmarks")
    dsub = da.add_subparsers(dest="data_cmd", required=True, metavar="{check,info}")
    c = dsub.add_parser("check", help="report missing or unreadable images and label problems")
    c.add_argument("path", help="an image folder (one sub-folder per class), or a list file with --root")
    c.add_argument("--root", default=None, help="for a list file: the folder its relative paths start from")
    c.add_argument("--num-classes", type=_positive_int, default=None,
                   help="list file: the number of classes labels must stay below (default: the largest label + 1)")
    c.add_argument("--no-decode", action="store_true", help="only check that files exist (faster)")
    i = dsub.add_parser("info", help="class counts of a benchmark")
    i.add_argument("name")
    i.add_argument("--root", default=None)
    i.add_argument("--imb-factor", type=float, default=100.0)
    da.set_defaults(func=cmd_data)


def _add_predict_export(sub) -> None:
    pr = sub.add_parser("predict", help="classify image files with a trained run (exit 1 when some could not be read)")
    pr.add_argument("run", help="a finished run folder")
    pr.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    pr.add_argument("--out", default="predictions.csv", help="the CSV to write (default: predictions.csv)")
    pr.add_argument("--top-k", type=_positive_int, default=5, help="classes per image in the CSV (default 5)")
    pr.add_argument("--batch-size", type=_positive_int, default=64)
    pr.add_argument("--workers", type=int, default=0, help="decoding processes (default 0: in this one)")
    _apply_options(pr)
    pr.set_defaults(func=cmd_predict)
    ex = sub.add_parser("export", help="write a trained run as one TorchScript or ONNX file taking uint8 images")
    ex.add_argument("run", help="a finished run folder")
    ex.add_argument("--out", required=True, help="the model file (its sidecar JSON goes beside it)")
    ex.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    _apply_options(ex)
    ex.set_defaults(func=cmd_export)


def _add_sweep(sub) -> None:
    sw = sub.add_parser("sweep", help="rank a grid of settings on validation, then train the best at several seeds")
    sw.add_argument("spec", help="the sweep's YAML file (see longtail.sweep)")
    sw.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help="runtime keys for this machine, the same setting on any: device=cuda, "
                         "compile_mode=reduce-overhead, data.root=DIR")
    sw.add_argument("--stage", choices=("search", "final", "all"), default="all",
                    help="search: the grid only; final: the chosen setting's runs (the search must be finished)")
    sw.add_argument("--jobs", type=_positive_int, default=1, help="runs side by side, one thread each (default 1)")
    sw.add_argument("--dry-run", action="store_true", help="list the runs and which are done; train nothing")
    sw.set_defaults(func=cmd_sweep)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="longtail", description="Long-tailed image classification: ALA, GALA, PR "
                                "and the standard baselines.")
    p.add_argument("--version", action="version", version=f"longtail {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{demo,train,eval,report,data,predict,export,sweep}")
    for add in (_add_demo, _add_train, _add_eval, _add_report, _add_data, _add_predict_export, _add_sweep):
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from longtail.config import ConfigError
    from longtail.rundir import CheckpointWriteError
    from longtail.sweep import RunFailed
    from longtail.train import TrainingDiverged, TrainingInterrupted

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides written after an option (`train CONFIG --run-dir X seed=1`) are overrides too
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except TrainingInterrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 130
    except (TrainingDiverged, CheckpointWriteError, RunFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # a user's mistake or the machine's state (a missing file or package, no network, a folder given
    # for a file): one line, not a traceback
    except (ConfigError, ValueError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
