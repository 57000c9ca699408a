import hashlib
import json
import statistics
import subprocess
import sys
import warnings

import pytest

from longtail.report import (
    bar_labels,
    markdown_table,
    plot_summary,
    published_figure,
    summarize,
    summary_labels,
    write_csv,
)

# A run's stored experiment settings, as results.json keeps them (the GALA CIFAR recipe); a run's
# own are these with its changes.
SETTINGS = {"data.name": "cifar100-lt", "data.imb_factor": 100.0, "data.val_per_class": 20, "data.val_seed": 0,
            "data.val_shortfall": "move", "data.train_list": None, "data.val_list": None, "data.test_list": None,
            "data.augment": "autoaugment", "data.limit_per_class": None, "data.limit_eval_per_class": None,
            "model.name": "resnet32", "loss.name": "gala", "optim.lr": 0.1, "optim.batch_size": 64,
            "optim.schedule": "cosine", "optim.weight_decay": 5e-4, "optim.warmup_epochs": 2, "optim.drop_last": True}
ABSENT = object()  # a key without effect in a run's settings (not stored)


def fingerprint(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def _settings(changes=None, model="resnet32") -> dict:
    merged = {**SETTINGS, "model.name": model, **(changes or {})}
    return {k: v for k, v in merged.items() if v is not ABSENT}


def _run(seed, top1, settings=None, method="gala-reference", model="resnet32", ckpts=("best_val", "last"),
         first_stage=None, first_method="gcl"):
    """A synthetic results.json: `settings` changes the stored settings, `first_stage` ({key: value}
    changes) makes it a second stage whose first stage, of `first_method`, stored those settings."""
    variant = {"top1": top1, "many": top1 + 10, "medium": top1, "few": top1 - 10}
    stored = _settings(settings, model)
    run = {"dataset": stored["data.name"], "imb_factor": 100, "method": method, "seed": seed,
           "settings": stored, "_dir": f"run-{top1}-{seed}",
           "best_test_epoch": {"epoch": 3, "top1": top1 + 1}, "train_time_s": 3600.0 * (1 + seed),
           "checkpoints": {c: {"raw": variant, "pr": variant, "pr_transductive": variant,
                               "la": {"top1": top1 + 0.5}} for c in ckpts}}
    together = dict(stored)
    if first_stage is not None:
        run["first_stage"] = {"method": first_method, "seed": seed, "settings": _settings(first_stage)}
        together.update({f"first_stage.{k}": v for k, v in run["first_stage"]["settings"].items()})
    run["setting"] = fingerprint(together)
    return run


def test_seeds_of_one_setting_are_averaged_and_other_settings_kept_apart():
    rows = summarize([_run(0, 50.0), _run(1, 52.0), _run(0, 40.0, settings={"optim.lr": 0.05}),
                      _run(0, 45.0, model="resnext50_32x4d")])
    assert len(rows) == 3
    by = {r["raw.top1"]: r for r in rows}
    main = by[f"{51.0:.2f} ± {statistics.stdev([50.0, 52.0]):.2f}"]
    assert main["seeds"] == 2 and main["seed_list"] == [0, 1] and main["model"] == "resnet32"
    assert by["40.00"]["seeds"] == 1 and by["45.00"]["model"] == "resnext50_32x4d"
    table = markdown_table(rows)
    assert "| cifar100-lt IF100 | gala-reference [optim.lr=0.1] | resnet32 | 2 | 51.00 ± 1.41 |" in table
    assert "| gala-reference [optim.lr=0.05] | resnet32 | 1 | 40.00 |" in table
    # post-hoc LA (tau on validation) has its column, after transductive PR
    # then best epoch on test, and training hours per run (1 h for seed 0, 2 h for seed 1)
    assert "| 51.00 ± 1.41 | 51.50 ± 1.41 | 52.00 ± 1.41 | 1.50 ± 0.71 | 52.1 (+PR 52.3) |" in table
    assert "| gala-reference | resnext50_32x4d | 1 | 45.00 |" in table  # alone for its model: no label
    assert "selected on the test" in table


@pytest.mark.parametrize("seconds, unit, per_unit", [((3600.0, 7200.0), "h", 3600), ((90.0, 150.0), "min", 60),
                                                     ((4.0, 6.5), "s", 1), ((1800.0, 3600.0), "h", 3600),
                                                     ((3599.0, 1200.0), "min", 60), ((30.0, 60.0), "min", 60),
                                                     ((59.9, 12.0), "s", 1)])
def test_training_time_column_takes_a_unit_that_shows_the_runs(seconds, unit, per_unit):
    runs = [_run(0, 50.0), _run(1, 52.0)]
    for run, t in zip(runs, seconds):
        run["train_time_s"] = t
    table = markdown_table(summarize(runs))
    values = [t / per_unit for t in seconds]
    assert f"| best epoch on TEST | train {unit} / run | published |" in table
    assert f"| {statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} | 52.1 (+PR 52.3) |" in table
    assert f"Train {unit} / run: training wall time" in table


def test_training_time_unit_follows_the_longest_run_in_the_table():
    # one table, one unit: a 30-second run beside a 2-hour run is shown in hours
    short, long = _run(0, 50.0, method="ce"), _run(0, 52.0)
    short["train_time_s"], long["train_time_s"] = 30.0, 7200.0
    table = markdown_table(summarize([short, long]))
    assert "train h / run" in table
    assert f"| {30 / 3600:.2f} | 39.1 |" in table and "| 2.00 | 52.1 (+PR 52.3) |" in table


def test_runs_group_by_the_setting_they_stored_and_are_told_apart_by_their_stored_settings():
    nearest = _run(0, 50.0, settings={"data.autoaugment_shear": "nearest"})
    bicubic = [_run(s, 49.0 + s, settings={"data.autoaugment_shear": "bicubic"}) for s in (0, 1)]
    rows = summarize([nearest, *bicubic])
    assert sorted((r["seeds"], r["seed_list"]) for r in rows) == [(1, [0]), (2, [0, 1])]
    # the two settings of one method are told apart by the stored value that differs, and only by it
    assert sorted(r["differs"] for r in rows) == ["data.autoaugment_shear=bicubic", "data.autoaugment_shear=nearest"]
    assert "| gala-reference [data.autoaugment_shear=nearest] | resnet32 | 1 | 50.00 |" in markdown_table(rows)
    # the fingerprint a run stored decides its row: equal settings under another fingerprint are another row
    other = dict(_run(2, 51.0, settings={"data.autoaugment_shear": "bicubic"}), setting="0123456789")
    assert sorted(r["seed_list"] for r in summarize([*bicubic, other])) == [[0, 1], [2]]
    # a key a run did not store (no effect there) is named only where it is stored
    cosine = _run(0, 50.0)
    step = _run(0, 42.0, settings={"optim.schedule": "step", "optim.milestones": [160, 180]})
    assert sorted(r["differs"] for r in summarize([cosine, step])) == [
        "optim.milestones=[160, 180], optim.schedule=step", "optim.schedule=cosine"]


def test_a_second_stage_is_told_apart_by_its_first_stages_stored_settings():
    runs = [_run(s, 47.0 + s, method="gcl-crt", first_stage={"loss.noise_mul": 0.5}) for s in (0, 1)]
    runs.append(_run(0, 46.0, method="gcl-crt", first_stage={"loss.noise_mul": 0.3}))
    rows = summarize(runs)
    assert sorted((r["seeds"], r["differs"]) for r in rows) == [(1, "first_stage.loss.noise_mul=0.3"),
                                                                 (2, "first_stage.loss.noise_mul=0.5")]
    assert "| gcl-crt [first_stage.loss.noise_mul=0.5] | resnet32 | 2 |" in markdown_table(rows)


def test_second_stages_on_other_methods_are_named_by_the_first_stages_method():
    la = {"loss.name": "la", "optim.weight_decay": 5e-4}
    runs = [_run(0, 41.0, method="cb-crt", first_stage=la, first_method="la"),
            _run(0, 37.0, method="cb-crt", first_stage={"loss.name": "ce", "optim.schedule": "step"}, first_method="ce"),
            _run(0, 40.0, method="cb-crt", first_stage={**la, "optim.weight_decay": 1e-3}, first_method="la")]
    differs = sorted(r["differs"] for r in summarize(runs))
    # the recipe keys that come with another first-stage method (loss.name, optim.schedule) are not
    # listed; a key that sets apart two first stages of one method is, on every row
    assert differs == ["first_stage.method=ce, first_stage.optim.weight_decay=0.0005",
                       "first_stage.method=la, first_stage.optim.weight_decay=0.0005",
                       "first_stage.method=la, first_stage.optim.weight_decay=0.001"]


def test_report_reads_what_runs_stored_without_loading_configs_or_losses():
    code = ("import sys; from longtail.report import summarize; "
            f"rows = summarize([{_run(0, 50.0)!r}, {_run(1, 52.0)!r}]); assert rows[0]['seeds'] == 2; "
            "print(sorted(m for m in sys.modules if m.startswith('longtail')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['longtail', 'longtail.report']"


def test_runs_without_test_figures_are_left_out_with_a_warning(capsys):
    validation_only = dict(_run(2, 60.0), checkpoints={}, test_evaluated=False, best_test_epoch=None)
    rows = summarize([_run(0, 50.0), _run(1, 52.0), validation_only])
    assert [r["seed_list"] for r in rows] == [[0, 1]]
    assert capsys.readouterr().err == "warning: skipped run-60.0-2: validation only (eval.test=false), no test figures\n"
    # a run recorded with its best_val figures alone is left out of a table of last epochs
    recorded = _run(2, 49.0, ckpts=("best_val",))
    assert summarize([_run(0, 50.0), recorded], checkpoint="last")[0]["seed_list"] == [0]
    assert "skipped run-49.0-2: no 'last' checkpoint figures (it holds best_val)" in capsys.readouterr().err
    assert summarize([_run(0, 50.0), recorded])[0]["seed_list"] == [0, 2]
    # nothing left to table: an error that says so
    with pytest.raises(ValueError, match="no run given has 'best_val' test figures; `--checkpoint last`"):
        summarize([validation_only, _run(0, 50.0, ckpts=("last",))])


def test_a_figure_a_run_recorded_as_null_is_averaged_over_the_seeds_that_have_it():
    runs = [_run(0, 50.0), _run(1, 52.0), _run(2, 54.0)]
    runs[2]["checkpoints"]["best_val"]["pr_transductive"] = {"top1": 55.0, "many": None}
    runs[2]["checkpoints"]["best_val"]["la"] = None
    (row,) = summarize(runs)
    assert row["pr_transductive.top1"] == f"{statistics.mean([50.0, 52.0, 55.0]):.2f} ± {statistics.stdev([50.0, 52.0, 55.0]):.2f}"
    assert row["pr_transductive.many"] == f"{61.0:.2f} ± {statistics.stdev([60.0, 62.0]):.2f}"
    assert row["la.top1"] == f"{51.5:.2f} ± {statistics.stdev([50.5, 52.5]):.2f}"
    assert "| 51.50 ± 1.41 (n=2) |" in markdown_table([row])


@pytest.mark.parametrize("dataset, imb, method, figure", [
    ("cifar100-lt", 100, "gala-reference", "52.1 (+PR 52.3)"),
    ("cifar100-lt", 100, "gala-paper", "52.1 (+PR 52.3)"),
    ("cifar100-lt", 100.0, "ldam-drw", "42.0"),
    ("cifar100-lt", 100, "ce", "39.1"),
    ("cifar100-lt", 100, "ce-drw", "-"),  # CE with DRW is not the published CE
    ("imagenet-lt", None, "ala-drw", "53.3 (ResNeXt-50)"),
    ("cifar100-lt", 100, "la(tau=2.0)", "43.9"),
    ("cifar100-lt", 100, "ala-drw", "-"),  # not published for CIFAR
    ("cifar100-lt", 200, "gcl", "44.9"),
    ("cifar10-lt", 100, "gala-paper", "-"),
    ("places-lt", None, "gala-reference", "41.0 (+PR 41.4)"),
])
def test_published_figures_follow_spec_section_6(dataset, imb, method, figure):
    assert published_figure(dataset, imb, method) == figure


def test_the_table_shows_the_published_figure_unless_told_otherwise():
    rows = summarize([_run(0, 50.0), _run(0, 38.0, method="ce", settings={"loss.name": "ce"})])
    table = markdown_table(rows)
    assert "| cifar100-lt IF100 | gala-reference | resnet32 | 1 | 50.00 |" in table
    gala_line = next(ln for ln in table.splitlines() if "| gala-reference |" in ln)
    ce_line = next(ln for ln in table.splitlines() if "| ce |" in ln)
    assert gala_line.endswith("| 52.1 (+PR 52.3) |") and ce_line.endswith("| 39.1 |")
    custom = markdown_table(rows, published={"ce": "x"}).splitlines()
    assert next(ln for ln in custom if "| ce |" in ln).endswith("| x |")
    assert next(ln for ln in custom if "| gala-reference |" in ln).endswith("| - |")


def test_the_summary_chart_names_each_bar_as_the_table_tells_the_rows_apart(tmp_path):
    bicubic, nearest = ({"data.autoaugment_shear": s} for s in ("bicubic", "nearest"))
    rows = summarize([_run(0, 50.0, settings=bicubic), _run(1, 52.0, settings=bicubic), _run(0, 49.0, settings=nearest),
                      _run(0, 38.0, method="ce")])
    labels = summary_labels(rows)
    assert len(set(labels)) == len(rows)  # two gala-reference settings, each named
    assert sorted(labels) == ["ce", "gala-reference\ndata.autoaugment_shear=bicubic",
                              "gala-reference\ndata.autoaugment_shear=nearest"]
    # rows from several imbalance factors carry it; several models name theirs
    other_if = dict(_run(0, 45.0), imb_factor=200)
    assert sorted(summary_labels(summarize([_run(0, 50.0), other_if]))) == [
        "cifar100-lt IF100\ngala-reference", "cifar100-lt IF200\ngala-reference"]
    assert sorted(summary_labels(summarize([_run(0, 50.0), _run(0, 45.0, model="resnext50_32x4d")]))) == [
        "gala-reference\nresnet32", "gala-reference\nresnext50_32x4d"]
    # the chart's bars also say how many seeds each stands on
    assert sorted(bar_labels(rows)) == ["ce\n(1 seed)", "gala-reference\ndata.autoaugment_shear=bicubic\n(2 seeds)",
                                        "gala-reference\ndata.autoaugment_shear=nearest\n(1 seed)"]
    # means with their std over seeds ("51.00 ± 1.41") and single runs plot alike
    path = plot_summary(rows, tmp_path / "summary.png")
    from PIL import Image
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 400
    # rows told apart by several settings (two recipes) get a line per setting: one long line
    # ran off the chart sideways, tight_layout gave up ("Tight layout not applied") and clipped it
    ldam = {"data.augment": "crop_flip", "optim.batch_size": 128, "optim.schedule": "step", "optim.weight_decay": 2e-4,
            "optim.warmup_epochs": 5, "optim.drop_last": False, "optim.milestones": [160, 180],
            "optim.step_factors": [0.01, 0.0001]}
    rows = summarize([_run(0, 50.0), _run(0, 42.0, settings=ldam)])
    # the milestones have no effect on a cosine schedule, so that run did not store them: only the
    # row where they act names them
    assert sorted(summary_labels(rows)) == [
        "gala-reference\ndata.augment=autoaugment\noptim.batch_size=64\n"
        "optim.drop_last=True\noptim.schedule=cosine\noptim.warmup_epochs=2\noptim.weight_decay=0.0005",
        "gala-reference\ndata.augment=crop_flip\noptim.batch_size=128\noptim.drop_last=False\n"
        "optim.milestones=[160, 180]\noptim.schedule=step\noptim.step_factors=[0.01, 0.0001]\n"
        "optim.warmup_epochs=5\noptim.weight_decay=0.0002"]
    # a list value keeps its commas on its line
    listed = {"dataset": "cifar100-lt", "method": "ce", "model": "resnet32",
              "differs_values": ["optim.milestones=[160, 180]", "optim.lr=0.1"]}
    assert summary_labels([listed]) == ["ce\noptim.milestones=[160, 180]\noptim.lr=0.1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the layout must fit the labels
        plot_summary(rows, tmp_path / "recipes.png")


def test_csv_holds_each_figure_as_mean_and_std_numbers(tmp_path):
    import csv

    runs = [_run(0, 50.0), _run(1, 52.5), _run(2, 51.0), _run(0, 40.0, method="ce")]
    runs[1]["checkpoints"]["best_val"]["pr"] = {"top1": 53.0}  # seed 1 alone has other +PR figures
    rows = summarize(runs)
    path = write_csv(rows, tmp_path / "summary.csv")
    lines = {r["method"]: r for r in csv.DictReader(path.open())}
    assert set(lines) == {"gala-reference", "ce"}
    gala, ce = lines["gala-reference"], lines["ce"]
    assert (gala["seeds"], gala["seed_list"], gala["imb_factor"], gala["model"]) == ("3", "0 1 2", "100", "resnet32")
    top1 = [50.0, 52.5, 51.0]
    assert float(gala["raw_top1_mean"]) == pytest.approx(statistics.mean(top1), abs=1e-4)
    assert float(gala["raw_top1_std"]) == pytest.approx(statistics.stdev(top1), abs=1e-4)
    assert float(gala["raw_few_mean"]) == pytest.approx(statistics.mean(top1) - 10, abs=1e-4)
    # +PR: seeds 0 and 2 score their top-1, seed 1 its own 53.0; its groups are missing, so they
    # average over the two seeds that have them
    assert float(gala["pr_top1_mean"]) == pytest.approx(statistics.mean([50.0, 53.0, 51.0]), abs=1e-4)
    assert float(gala["pr_many_mean"]) == pytest.approx(statistics.mean([60.0, 61.0]), abs=1e-4)
    assert float(gala["best_on_test_mean"]) == pytest.approx(statistics.mean(top1) + 1, abs=1e-4)
    assert float(gala["train_seconds_mean"]) == pytest.approx(3600 * 2)  # 1, 2 and 3 hours
    assert float(gala["train_seconds_std"]) == pytest.approx(statistics.stdev([3600, 7200, 10800]))
    assert gala["checkpoint"] == "best_val"
    assert gala["published"] == "52.1 (+PR 52.3)"
    # one seed: a mean and no std
    assert (float(ce["raw_top1_mean"]), ce["raw_top1_std"], ce["published"]) == (40.0, "", "39.1")
    assert write_csv(summarize(runs, checkpoint="last"), tmp_path / "last.csv").read_text().splitlines()[1].count(",last,") == 1
    # no rows: the same columns, no lines
    empty = write_csv([], tmp_path / "empty.csv").read_text().splitlines()
    assert empty == [path.read_text().splitlines()[0]]


def test_report_command_writes_the_csv(tmp_path, capsys):
    import json

    from longtail import cli

    for seed, top1 in ((0, 50.0), (1, 52.0)):
        run = tmp_path / f"gala_s{seed}"
        run.mkdir()
        (run / "results.json").write_text(json.dumps(_run(seed, top1)))
    assert cli.main(["report", str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    text = (tmp_path / "t.csv").read_text().splitlines()
    assert text[0].startswith("dataset,imb_factor,method,differs,model,seeds,seed_list,raw_top1_mean,raw_top1_std")
    assert len(text) == 2 and ",51.0,1.4142," in text[1]
    assert f"csv: {tmp_path / 't.csv'}" in capsys.readouterr().out


def test_paired_table_differences_are_taken_seed_by_seed_over_shared_seeds():
    from longtail.report import paired_table

    ce = {0: 38.0, 2: 39.5, 10: 37.0}
    ce_pr = {0: 41.0, 2: 43.0, 10: 40.5}  # CE's +PR figures differ from its raw ones
    gala = {10: 50.0, 2: 51.5, 3: 49.0}  # seed 3 has no CE partner, seed 0 no GALA one; loaded out of order
    runs = []
    for seed, top1 in ce.items():
        run = _run(seed, top1, method="ce")
        run["checkpoints"]["best_val"]["pr"] = {"top1": ce_pr[seed]}
        runs.append(run)
    runs += [_run(seed, top1) for seed, top1 in gala.items()]
    runs[3]["checkpoints"]["best_val"]["pr"] = {"top1": 55.0}  # GALA seed 10 with its own +PR figure
    runs.append(_run(2, 30.0, method="la(tau=1.0)"))
    table = paired_table(summarize(runs), "ce")
    raw = [gala[2] - ce[2], gala[10] - ce[10]]
    pr = [gala[2] - ce_pr[2], 55.0 - ce_pr[10]]
    assert (f"| cifar100-lt IF100 | gala-reference | 2 10 | {statistics.mean(raw):+.2f} ± {statistics.stdev(raw):.2f} (n=2) | "
            f"{statistics.mean(pr):+.2f} ± {statistics.stdev(pr):.2f} (n=2) | 2 of 2 |") in table
    assert f"| la(tau=1.0) | 2 | {30.0 - ce[2]:+.2f} (n=1) | {30.0 - ce_pr[2]:+.2f} (n=1) | 0 of 1 |" in table
    assert "| ce |" not in table  # not paired with itself
    # a bare name finds la(tau=1.0); a name that is in no setting says which names are
    assert "| gala-reference | 2 | " in paired_table(summarize(runs), "la")
    with pytest.raises(ValueError, match="names no row of the table; its methods are: ce; gala-reference; la"):
        paired_table(summarize(runs), "bs")
    with pytest.raises(ValueError, match="the table is empty"):
        paired_table([], "ce")


def test_paired_table_pairs_within_a_setting_and_names_settings_without_the_baseline():
    from longtail.report import paired_table

    def at(imb, seed, top1, method="gala-reference", model="resnet32", settings=None):
        run = _run(seed, top1, method=method, model=model, settings=settings)
        run["imb_factor"] = imb
        return run

    runs = [at(100, 0, 40.0, "ce"), at(100, 0, 50.0), at(100, 0, 45.0, model="resnext50_32x4d"),
            at(10, 0, 60.0), at(10, 0, 56.0, "ce"), at(10, 0, 57.0, "ce", settings={"optim.lr": 0.05})]
    table = paired_table(summarize(runs[:4]), "ce")
    # GALA at IF100 on resnet32 pairs with that CE; the ResNeXt row has no CE of its model, nor IF10
    assert f"| cifar100-lt IF100 resnet32 | gala-reference | 0 | {50.0 - 40.0:+.2f} (n=1) |" in table
    assert "No ce row to pair with in: " in table
    assert "cifar100-lt IF100 resnext50_32x4d" in table and "cifar100-lt IF10 resnet32" in table
    assert table.count("| gala-reference |") == 1
    # two CE settings at IF10: the bare name is ambiguous there, whatever IF100 has
    with pytest.raises(ValueError, match=r"several rows of one setting; give the whole label: cifar100-lt IF10 \(ce"):
        paired_table(summarize(runs[:2] + runs[3:]), "ce")
    # the whole label picks one at IF10, and the plain ce still serves IF100
    table = paired_table(summarize(runs[:2] + runs[3:]), "ce [optim.lr=0.05]")
    assert f"| cifar100-lt IF10 | gala-reference | 0 | {60.0 - 57.0:+.2f} (n=1) |" in table
    assert f"| cifar100-lt IF10 | ce [optim.lr=0.1] | 0 | {56.0 - 57.0:+.2f} (n=1) |" in table
    assert "No ce [optim.lr=0.05] row to pair with in: cifar100-lt IF100." in table


def test_report_command_pairs_against_a_method_and_names_the_choices_when_it_is_missing(tmp_path, capsys):
    import json

    from longtail import cli

    for name, seed, top1, method in (("ce_s0", 0, 40.0, "ce"), ("ce_s1", 1, 41.0, "ce"),
                                     ("gala_s0", 0, 50.0, "gala-reference"), ("gala_s1", 1, 53.0, "gala-reference")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(_run(seed, top1, method=method)))
    assert cli.main(["report", str(tmp_path), "--against", "ce"]) == 0
    out = capsys.readouterr().out
    assert "Paired by seed against ce (top1, checkpoint best_val" in out
    assert f"| gala-reference | 0 1 | {statistics.mean([10.0, 12.0]):+.2f} ± {statistics.stdev([10.0, 12.0]):.2f} (n=2) |" in out
    assert cli.main(["report", str(tmp_path), "--against", "ldam"]) == 2
    assert "its methods are: ce; gala-reference" in capsys.readouterr().err


def _save_run(folder, seed, top1, method="gala-reference"):
    import json

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(_run(seed, top1, method=method)))
    return folder


def test_load_results_finds_runs_at_any_depth_in_path_order(tmp_path, capsys):
    from longtail.report import load_results

    # `longtail demo` writes runs/demo-<time>/<method>/results.json: two levels below runs/
    _save_run(tmp_path / "runs" / "demo-2" / "ce", 0, 40.0, "ce")
    _save_run(tmp_path / "runs" / "demo-1" / "gala", 0, 50.0)
    _save_run(tmp_path / "runs" / "a" / "b" / "c", 1, 51.0)
    _save_run(tmp_path / "runs" / "plain", 2, 52.0)
    (tmp_path / "runs" / "demo-1" / "summary.md").write_text("not a run")
    (tmp_path / "runs" / "training").mkdir()
    (tmp_path / "runs" / "training" / "last.pt").write_bytes(b"")  # a seed not finished: left out, said so
    found = load_results([tmp_path / "runs"])
    runs = tmp_path / "runs"
    assert f"warning: skipped {runs / 'training'}: an unfinished run" in capsys.readouterr().err
    assert [r["_dir"] for r in found] == [str(runs / "a/b/c"), str(runs / "demo-1/gala"), str(runs / "demo-2/ce"),
                                          str(runs / "plain")]
    assert [(r["method"], r["seed"]) for r in found] == [("gala-reference", 1), ("gala-reference", 0), ("ce", 0),
                                                         ("gala-reference", 2)]


def test_report_command_summarises_a_demo_folder_two_levels_down(tmp_path, capsys):
    from longtail import cli

    for seed, top1 in ((0, 50.0), (1, 52.0)):
        _save_run(tmp_path / "runs" / f"demo-{seed}" / "gala", seed, top1)
    assert cli.main(["report", str(tmp_path / "runs")]) == 0
    assert f"| gala-reference | resnet32 | 2 | 51.00 ± {statistics.stdev([50.0, 52.0]):.2f} |" in capsys.readouterr().out


def test_load_results_counts_each_results_json_once(tmp_path):
    from longtail.report import load_results

    # a run folder with a run nested in it, named alone, beside its nested run, and through a link
    outer = _save_run(tmp_path / "first", 0, 50.0)
    inner = _save_run(outer / "second_stage", 1, 52.0)
    (tmp_path / "compare").mkdir()
    (tmp_path / "compare" / "link").symlink_to(inner, target_is_directory=True)
    assert [r["_dir"] for r in load_results([outer])] == [str(outer), str(inner)]
    assert [r["_dir"] for r in load_results([outer, inner, tmp_path / "compare"])] == [str(outer), str(inner)]
    # a linked run folder alone is found (as a one-level glob found it), and a link loop ends
    (tmp_path / "compare" / "loop").symlink_to(tmp_path / "compare", target_is_directory=True)
    assert [r["_dir"] for r in load_results([tmp_path / "compare"])] == [str(tmp_path / "compare" / "link")]
    # the results.json itself may be named
    assert [r["seed"] for r in load_results([inner / "results.json"])] == [1]


def test_a_broken_results_json_is_an_error_naming_it(tmp_path, capsys):
    from longtail import cli
    from longtail.report import load_results

    run = _save_run(tmp_path / "runs" / "gala_s0", 0, 50.0)
    broken = tmp_path / "runs" / "gala_s1" / "results.json"
    broken.parent.mkdir()
    broken.write_text('{"run": "\n')  # cut short mid-string
    for named in (tmp_path / "runs", broken.parent, broken):  # scanned or named: a seed must not vanish
        with pytest.raises(ValueError, match=rf"^{broken} is not valid JSON \(Invalid control character"):
            load_results([named])
    assert cli.main(["report", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {broken} is not valid JSON") and err.count("\n") == 1
    # where the run's checkpoint is there, the message says how to write the file again
    (broken.parent / "last.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=rf"move it aside and `longtail train --resume {broken.parent}`"):
        load_results([broken.parent])
    broken.write_bytes(b"\xff\xfe{}")  # not even UTF-8
    with pytest.raises(ValueError, match=rf"^{broken} is not valid JSON"):
        load_results([run.parent])


@pytest.mark.parametrize("content", ["{}", '{"accuracy": 0.9}', "[1, 2]",
                                     '{"dataset": "x", "method": "m", "seed": 0, "checkpoints": [1]}'])
def test_a_foreign_results_json_is_an_error_when_named_and_skipped_with_a_warning_when_scanned(tmp_path, capsys,
                                                                                              content):
    from longtail import cli
    from longtail.report import load_results

    _save_run(tmp_path / "runs" / "gala_s0", 0, 50.0)
    foreign = tmp_path / "runs" / "other_tool" / "results.json"
    foreign.parent.mkdir()
    foreign.write_text(content)
    for named in (foreign.parent, foreign):
        with pytest.raises(ValueError, match=rf"^{foreign} is not a longtail results.json"):
            load_results([named])
    assert cli.main(["report", str(foreign.parent)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {foreign} is not a longtail results.json")
    found = load_results([tmp_path / "runs"])
    assert [r["_dir"] for r in found] == [str(tmp_path / "runs" / "gala_s0")]
    assert capsys.readouterr().err == f"warning: skipped {foreign}: not a longtail results.json\n"
    # a folder of nothing else is an error, not an empty table
    others = tmp_path / "others"
    (others / "x").mkdir(parents=True)
    (others / "x" / "results.json").write_text(content)
    with pytest.raises(FileNotFoundError, match=rf"^{others} holds no longtail results.json \(1 of other tools"):
        load_results([others])


def test_report_says_what_is_missing_and_how_to_finish_a_run(tmp_path, capsys):
    from longtail import cli
    from longtail.report import load_results

    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path / 'nope'} does not exist$"):
        load_results([tmp_path / "nope"])
    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    assert cli.main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"`longtail train --resume {run}` finishes it" in err and "longtail eval" not in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no results.json, in it or in any folder below") as info:
        load_results([tmp_path / "empty"])
    assert "longtail eval" not in str(info.value)


def test_the_table_does_not_call_the_last_checkpoint_selected_on_validation():
    runs = [_run(0, 50.0), _run(1, 52.0)]
    assert "checkpoint selected on validation" in markdown_table(summarize(runs))
    last = markdown_table(summarize(runs, checkpoint="last"))
    assert "checkpoint selected on validation" not in last
    assert "Top-1 and groups: last-epoch checkpoint (no selection)" in last


def test_a_mean_over_fewer_seeds_than_the_row_has_says_how_many():
    runs = [_run(0, 50.0), _run(1, 52.0), _run(2, 51.0)]
    runs[1]["best_test_epoch"] = None  # this seed did not track test accuracy
    del runs[2]["checkpoints"]["best_val"]["la"]  # saved before post-hoc LA was reported
    runs[2]["checkpoints"]["best_val"]["pr"]["few"] = None
    rows = summarize(runs)
    table = markdown_table(rows)
    line = next(ln for ln in table.splitlines() if "| gala-reference |" in ln)
    cells = [c.strip() for c in line.split("|")[1:-1]]
    head = [c.strip() for c in table.splitlines()[0].split("|")[1:-1]]
    cell = dict(zip(head, cells))
    assert cell["seeds"] == "3" and cell["top-1"] == f"{51.0:.2f} ± {1.0:.2f}"  # all three: no note
    assert cell["+post-hoc LA top-1"] == f"{51.5:.2f} ± {statistics.stdev([50.5, 52.5]):.2f} (n=2)"
    assert cell["best epoch on TEST"] == f"{51.5:.2f} ± {statistics.stdev([51.0, 52.0]):.2f} (n=2)"
    assert cell["+PR few"] == f"{41.0:.2f} ± {statistics.stdev([40.0, 42.0]):.2f} (n=2)"
    assert "(n=k): the mean of the k seeds" in table
    assert "(n=" not in markdown_table(summarize([_run(0, 50.0), _run(1, 52.0)]))
    assert rows[0]["la.top1"] == f"{51.5:.2f} ± {statistics.stdev([50.5, 52.5]):.2f}"  # the row's strings as before


def test_paired_table_does_not_pair_runs_that_saw_other_images():
    from longtail.report import paired_table

    runs = [_run(0, 40.0, method="ce"), _run(1, 41.0, method="ce"), _run(0, 50.0), _run(1, 52.0),
            _run(0, 47.0, method="la", settings={"data.val_seed": 3}),
            _run(0, 46.0, method="bs", settings={"data.val_per_class": 0})]
    table = paired_table(summarize(runs), "ce")
    assert f"| cifar100-lt IF100 | gala-reference | 0 1 | {10.5:+.2f} ± {statistics.stdev([10.0, 11.0]):.2f} (n=2) |" in table
    # another validation split takes other images out of training: no seed-by-seed difference for it
    assert "| la |" not in table and "| bs |" not in table
    assert "Not paired with ce: trained or evaluated on other images" in table
    assert "la (data.val_seed=3 vs 0)" in table and "bs (data.val_per_class=0 vs 20)" in table



def test_paired_table_pairs_list_runs_whatever_path_their_lists_were_given_by():
    from longtail.report import paired_table

    def on_lists(seed, top1, method, train_list, test_list="ImageNet_LT_test.txt"):
        run = _run(seed, top1, method=method, settings={"data.name": "imagenet-lt", "data.train_list": train_list,
                                                        "data.test_list": test_list, "data.val_list": None})
        run["dataset"], run["imb_factor"] = "imagenet-lt", None
        return run

    runs = [on_lists(0, 40.0, "ce", None), on_lists(0, 45.0, "la", "/data/lists/ImageNet_LT_train.txt"),
            on_lists(0, 46.0, "bs", "~/splits/ImageNet_LT/ImageNet_LT_train.txt"),
            on_lists(0, 47.0, "gala-reference", "ImageNet_LT_train.txt", test_list="/x/ImageNet_LT_val.txt")]
    table = paired_table(summarize(runs), "ce")
    # a list found by the standard search (None) or given by another path is not evidence of other images
    assert f"| imagenet-lt | la | 0 | {5.0:+.2f} (n=1) |" in table and f"| bs | 0 | {6.0:+.2f} (n=1) |" in table
    # another test list is
    assert "| gala-reference |" not in table
    assert "gala-reference (data.test_list=ImageNet_LT_val.txt vs ImageNet_LT_test.txt)" in table
    # without a validation split, its seed and shortfall rule choose no image
    split = [_run(0, 40.0, method="ce", settings={"data.val_per_class": 0, "data.val_seed": 0}),
             _run(0, 50.0, settings={"data.val_per_class": 0, "data.val_seed": 5})]
    assert f"| gala-reference | 0 | {10.0:+.2f} (n=1) |" in paired_table(summarize(split), "ce")
