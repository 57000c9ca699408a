"""The `longtail` command: demo | train | eval | report | data."""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/ (editable install)

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
    # A net this small gains nothing from a second thread, and OpenMP threads that spin-wait for
    # a busy core make it many times slower on a loaded machine.
    "threads": 1,
}


def resolve_config_path(name: str) -> Path:
    """A YAML path, else a shipped config by name (`cifar100_lt_if100_gala_reference`, with or without
    .yaml or a leading configs/), so a config is found from any working folder."""
    p = Path(name)
    if p.is_file():
        return p
    # only a bare name or configs/NAME: a path into another folder that does not exist is an error,
    # not silently the shipped config of the same file name
    shipped = Path(*p.parts[1:]) if len(p.parts) > 1 and p.parts[0] == "configs" else p
    if len(shipped.parts) == 1:
        for candidate in (CONFIG_DIR / shipped, CONFIG_DIR / f"{shipped}.yaml"):
            if candidate.is_file():
                return candidate
    if not CONFIG_DIR.is_dir():
        raise FileNotFoundError(f"config {name!r} not found, and this install has no configs/ folder (the shipped "
                                "configs live in the repository: install it with `pip install -e .`)")
    known = sorted(c.stem for c in CONFIG_DIR.glob("*.yaml"))
    hint = f" Known configs: {', '.join(known[:12])}{' ...' if len(known) > 12 else ''}" if known else ""
    raise FileNotFoundError(f"config {name!r} not found (a YAML path, or a name in {CONFIG_DIR}).{hint}")


def cmd_train(args) -> int:
    from longtail.config import load_config
    from longtail.train import resume_config, train

    if args.resume:
        if args.config and "=" not in args.config:
            raise ValueError(f"--resume continues the run with its saved config; give no CONFIG ({args.config!r}), "
                             "only runtime overrides such as threads=2")
        if args.run_dir:
            raise ValueError("--resume RUN continues in RUN itself; --run-dir does not go with it")
        # the positional CONFIG slot may hold the first override: `--resume RUN threads=2`
        overrides = ([args.config] if args.config else []) + list(args.overrides)
        cfg = resume_config(args.resume, overrides)
        run_dir = train(cfg, run_dir=args.resume, resume=True)
        print(f"run folder: {run_dir}")
        return 0
    if not args.config:
        raise ValueError("give a CONFIG (YAML path or name) or --resume RUN_DIR")
    cfg = load_config(resolve_config_path(args.config), args.overrides)
    run_dir = train(cfg, run_dir=args.run_dir)
    print(f"run folder: {run_dir}")
    return 0


def cmd_eval(args) -> int:
    from longtail.config import apply_overrides, load_config, saved_config_from_dict
    from longtail.data.augment import build_eval_transform
    from longtail.distributed import pick_device
    from longtail.evaluation import evaluate_model, report_markdown
    from longtail.train import build_model, load_data, method_name, read_checkpoint, run_precision

    target = Path(args.target)
    ckpt_path = target / "best.pt" if target.is_dir() else target
    if target.is_dir() and not ckpt_path.exists():
        ckpt_path = target / "last.pt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt_path} (give a run folder or a .pt file)")
    run_dir = ckpt_path.parent
    ckpt = read_checkpoint(ckpt_path, "cpu")  # before the data loads: a bad file fails at once
    if (run_dir / "config.yaml").is_file():
        cfg = load_config(run_dir / "config.yaml", args.overrides, saved=True)
    elif isinstance(ckpt.get("config"), dict):  # a .pt moved out of its run folder carries its config
        cfg = saved_config_from_dict(apply_overrides(copy.deepcopy(ckpt["config"]), args.overrides))
    else:
        raise FileNotFoundError(f"{ckpt_path} holds no config and {run_dir / 'config.yaml'} does not exist")
    if args.pr_tau is not None:
        cfg.eval.published_pr_tau = args.pr_tau
    device = pick_device(cfg.device)
    bench = load_data(cfg)
    in_ch = bench.test.images.shape[1] if hasattr(bench.test, "images") else 3
    model = build_model(cfg, bench.num_classes, in_ch).to(device)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError(f"the weights in {ckpt_path} do not fit the model this config builds (an override that "
                         f"changes the model or the classes?): {str(exc).splitlines()[0]}") from None
    cfg.channels_last = False  # the model here is in the default memory format
    precision = run_precision(cfg, run_dir, device)  # as the run trained (an explicit override wins)
    report = evaluate_model(model, bench, cfg, device, build_eval_transform(bench.mean, bench.std), precision)
    results = {"method": method_name(cfg), "checkpoint": str(ckpt_path), "checkpoints": {ckpt_path.stem: report}}
    out = run_dir / f"eval-{ckpt_path.stem}.json"
    out.write_text(json.dumps(results, indent=2))
    print(report_markdown(results))
    print(f"written: {out}")
    return 0


def cmd_report(args) -> int:
    from longtail.report import load_results, markdown_table, paired_table, plot_summary, summarize, write_csv

    rows = summarize(load_results(args.runs), checkpoint=args.checkpoint)
    text = markdown_table(rows)
    if args.against:
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
        from longtail.data.listfile import check_list

        report = check_list(args.root, args.list_file, num_classes=args.num_classes, decode=not args.no_decode)
        print(report.summary() if hasattr(report, "summary") else report)
        return 0 if getattr(report, "ok", True) else 1
    if args.data_cmd == "info":
        from longtail.data import load_benchmark

        b = load_benchmark(args.name, args.root, imb_factor=args.imb_factor)
        counts = b.class_counts
        print(f"{b.name}: {b.num_classes} classes, {sum(counts)} training images "
              f"(max {max(counts)}, min {min(counts)}, imbalance {max(counts) / min(counts):.1f}); "
              f"val {len(b.val) if b.val is not None else 0}, test {len(b.test)}")
        return 0
    raise SystemExit("error: `longtail data check LIST --root ROOT` or `longtail data info NAME --root ROOT`")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from longtail.train import RESUME_OVERRIDABLE

    p = argparse.ArgumentParser(prog="longtail", description="Long-tailed image classification: ALA, GALA, PR "
                                "and the standard baselines.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{demo,train,eval,report,data}")

    d = sub.add_parser("demo", help="train CE, LA, ALA and GALA on the embedded long-tailed digits and compare")
    d.add_argument("--out", default="runs", help="where the run folders go (default: runs)")
    d.add_argument("--epochs", type=_positive_int, default=None, help="epochs per method (default 30)")
    d.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    d.add_argument("--seeds", type=_positive_int, default=1,
                   help="how many seeds per method (seed, seed+1, ...); the table gives mean ± std (default 1)")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train from a YAML config with key=value overrides")
    t.add_argument("config", nargs="?", help="YAML file, or a config name from configs/")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. loss.name=gala optim.lr=0.05 seed=1 "
                   "(before or after the options)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run (its saved config; only "
                   "settings that do not change the result may be overridden: "
                   f"{', '.join(RESUME_OVERRIDABLE)})")
    t.add_argument("--run-dir", help="run folder (default: out_dir/run_name or a timestamped name)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="re-evaluate a run folder or checkpoint, with post-hoc adjustments")
    e.add_argument("target", help="run folder (uses best.pt, else last.pt) or a .pt checkpoint")
    e.add_argument("overrides", nargs="*", help="overrides, e.g. data.root=/elsewhere eval.tau_grid=[0,1,2]")
    e.add_argument("--pr-tau", type=float, default=None, help="tau for the transductive PR figure")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("report", help="merge run folders into one markdown table (mean ± std over seeds)")
    r.add_argument("runs", nargs="+", help="run folders, results.json files, or folders searched for runs at any depth")
    r.add_argument("--out", help="also write the table to this markdown file")
    r.add_argument("--plot", help="also write a bar chart PNG here")
    r.add_argument("--csv", help="also write the figures as numbers (mean and std columns) to this CSV file")
    r.add_argument("--against", metavar="METHOD",
                   help="also compare every row with this method (as the table names it, e.g. ce), seed by seed, "
                   "within each setting (dataset, imbalance factor, model) among runs on the same images (validation split, "
                   "lists, limits); settings without it, and rows on other images, are named")
    r.add_argument("--checkpoint", default="best_val", choices=("best_val", "last"),
                   help="best_val: the checkpoint selected on validation (default); last: the final epoch")
    r.set_defaults(func=cmd_report)

    da = sub.add_parser("data", help="check list files, describe benchmarks")
    dsub = da.add_subparsers(dest="data_cmd", required=True, metavar="{check,info}")
    c = dsub.add_parser("check", help="report missing/unreadable files and label problems in a list file")
    c.add_argument("list_file")
    c.add_argument("--root", required=True, help="image root the list's relative paths start from")
    c.add_argument("--num-classes", type=_positive_int, default=None,
                   help="the number of classes labels must stay below (default: the largest label + 1)")
    c.add_argument("--no-decode", action="store_true", help="only check that files exist (faster)")
    i = dsub.add_parser("info", help="class counts of a benchmark")
    i.add_argument("name")
    i.add_argument("--root", default=None)
    i.add_argument("--imb-factor", type=float, default=100.0)
    da.set_defaults(func=cmd_data)
    return p


def main(argv: list[str] | None = None) -> int:
    from longtail.config import ConfigError
    from longtail.train import CheckpointWriteError, TrainingDiverged, TrainingInterrupted

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
    except (TrainingDiverged, CheckpointWriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # a user's mistake or the machine's state (a missing file or package, no network, a folder given
    # for a file): one line, not a traceback
    except (ConfigError, ValueError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
