"""The README's CIFAR-100-LT table, and docs/RESULTS.md's seed-mean, per-run and paired tables, agree
with the archived run files in docs/results/.

Every row whose seeds are all archived is recomputed with `longtail report`'s own summary from the
runs' results.json. (Six IF100 rows are not: their seed-0 run files were lost with the machine
that made them, and docs/RESULTS.md lists those seed-0 figures run by run.)"""
import statistics
from pathlib import Path

import pytest
from conftest import markdown_rows

from longtail.report import load_results, paired_table, summarize

ROOT = Path(__file__).resolve().parents[1]
ARCHIVED = {  # (IF, README method cell) -> run folders under docs/results
    ("200", "GALA, released algorithm (GALA's)"): "cifar100_lt_if200_gala_reference_s[0-2]",
    ("200", "CE (LDAM-DRW's)"): "cifar100_lt_if200_ce_s[0-2]",
    ("50", "GALA, released algorithm (GALA's)"): "cifar100_lt_if50_gala_reference_s[0-2]",
    ("50", "CE (LDAM-DRW's)"): "cifar100_lt_if50_ce_s[0-2]",
    ("10", "GALA, released algorithm (GALA's)"): "cifar100_lt_if10_gala_reference_s[0-2]",
    ("10", "CE (LDAM-DRW's)"): "cifar100_lt_if10_ce_s[0-2]",
    ("100", "LDAM-DRW"): "cifar100_lt_if100_ldam_drw_s[0-2]",
    ("100", "GCL, stage one (GALA's)"): "cifar100_lt_if100_gcl_s[0-4]",
    ("100", "GCL, released second stage on it (`gcl_stage2`)"): "cifar100_lt_if100_gcl_stage2_s[2-4]",
    ("100", "GCL, its own recipe (`gcl_own_recipe`), stage one"): "cifar100_lt_if100_gcl_own_recipe_s[0-2]",
    ("100", "GCL, its own recipe, two stages"): "cifar100_lt_if100_gcl_own_recipe_stage2_s[0-2]",
    ("100", "LA (LDAM-DRW's)"): "cifar100_lt_if100_la_ldam_recipe_s[0-2]",
    ("100", "GALA, released algorithm (LDAM-DRW's)"): "cifar100_lt_if100_gala_reference_ldam_recipe_s[0-2]",
}


def _readme_rows() -> dict[tuple[str, str], dict[str, str]]:
    rows = markdown_rows((ROOT / "README.md").read_text(), "| IF | method (recipe) |")
    return {(r["IF"], r["method (recipe)"]): r for r in rows}


@pytest.mark.parametrize("key", sorted(ARCHIVED), ids=lambda k: f"IF{k[0]} {k[1]}")
def test_readme_row_equals_the_summary_of_its_archived_runs(key):
    runs = sorted((ROOT / "docs" / "results").glob(ARCHIVED[key]))
    (row,) = summarize(load_results(runs))  # one setting, its seeds averaged
    readme = _readme_rows()[key]
    assert readme["seeds"] == str(row["seeds"]) == str(len(runs))
    assert (readme["top-1"], readme["+PR"], readme["+post-hoc LA"]) == (row["raw.top1"], row["pr.top1"], row["la.top1"])


RESULTS = (ROOT / "docs" / "RESULTS.md").read_text()
COLUMNS = {"top-1": "raw.top1", "many": "raw.many", "medium": "raw.medium", "few": "raw.few",
           "+PR top-1": "pr.top1", "PR transductive": "pr_transductive.top1", "+post-hoc LA": "la.top1",
           "best epoch on TEST": "best_on_test"}
# docs/RESULTS.md's IF100 seed-mean rows -> (archived run folders, the per-run row of the seed-0 run
# whose files were lost, or None when seed 0 is archived too)
IF100_SEED_MEANS = {
    "gala (reference), GALA recipe": ("gala_reference_s[1-5]", "gala (reference), bicubic shear (the released recipe)"),
    "gala (paper), GALA recipe": ("gala_paper_s[1-2]", "gala (paper), bicubic shear"),
    "la (tau 1), GALA recipe": ("la_s[1-5]", "la (tau 1), the GALA recipe"),
    "ala with DRW, LDAM-DRW recipe": ("ala_s[1-2]", "ala with DRW, the LDAM-DRW recipe"),
    "ce, LDAM-DRW recipe": ("ce_s[1-5]", "ce"),
    "bs, GALA recipe": ("bs_s[1-2]", "bs (Balanced Softmax), the GALA recipe"),
    "ldam_drw, LDAM-DRW recipe": ("ldam_drw_s[0-2]", None),
    "gcl stage one, GALA recipe": ("gcl_s[0-4]", None),
    "gcl two-stage (stage two on stage-one seeds 2-4), GALA recipe": ("gcl_stage2_s[2-4]", None),
    "gcl stage one, GCL's own recipe": ("gcl_own_recipe_s[0-2]", None),
    "gcl two-stage, GCL's own recipe (stage two on each run above)": ("gcl_own_recipe_stage2_s[0-2]", None),
    "la (tau 1), LDAM-DRW recipe": ("la_ldam_recipe_s[0-2]", None),
    "gala (reference), LDAM-DRW recipe": ("gala_reference_ldam_recipe_s[0-2]", None),
}


def _mean_cell(values: list[float], with_std: bool) -> str:
    mean = statistics.mean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if with_std else f"{mean:.2f}"


@pytest.mark.parametrize("method", sorted(IF100_SEED_MEANS))
def test_results_if100_seed_mean_row_equals_its_runs(method):
    """Each IF100 seed mean in docs/RESULTS.md: the archived runs' figures plus, where seed 0 was lost,
    that run's per-run row as recorded."""
    pattern, lost_row = IF100_SEED_MEANS[method]
    runs = sorted((ROOT / "docs" / "results").glob(f"cifar100_lt_if100_{pattern}"))
    (summary,) = summarize(load_results(runs))
    values = {key: list(summary["values"][key]) for key in COLUMNS.values()}
    if lost_row is not None:
        per_run = {r["method"]: r for r in markdown_rows(RESULTS, "| method | seeds | top-1 | many | medium | few | +PR top-1 | +PR many")}
        for column, key in COLUMNS.items():
            values[key].append(float(per_run[lost_row][column].split()[0]))
    row = {r["method (recipe)"]: r for r in markdown_rows(RESULTS, "| method (recipe) | seeds | top-1 | many |")}[method]
    assert row["seeds"] == str(len(values["raw.top1"]))
    for column, key in COLUMNS.items():
        cell = row[column].replace("**", "")
        assert cell == _mean_cell(values[key], "±" in cell), (method, column)


def test_results_archived_if100_table_equals_longtail_report():
    """The table `longtail report docs/results/cifar100_lt_if100_*` prints, as docs/RESULTS.md quotes it."""
    rows = summarize(load_results(sorted((ROOT / "docs" / "results").glob("cifar100_lt_if100_*"))))
    label = {r["method"] + (f" [{r['differs']}]" if r["differs"] else ""): r for r in rows}
    doc = markdown_rows(RESULTS, "| method | seeds | top-1 | many | medium | few | +PR top-1 | PR transductive")
    assert sorted(r["method"] for r in doc) == sorted(label)
    for r in doc:
        for column, key in COLUMNS.items():
            assert r[column] == label[r["method"]][key], (r["method"], column)


@pytest.mark.parametrize("imb", ["200", "50", "10"])
def test_results_other_if_tables_equal_their_runs(imb):
    """The IF200 / IF50 / IF10 tables of docs/RESULTS.md: seed means and per-run rows from the archived runs."""
    table = RESULTS[RESULTS.index(f"### CIFAR-100-LT IF{imb}, ResNet-32"):]
    doc = markdown_rows(table, "| method (recipe) |")
    for name, method in (("gala (reference), GALA recipe", "gala_reference"), ("ce, LDAM-DRW recipe", "ce")):
        runs = sorted((ROOT / "docs" / "results").glob(f"cifar100_lt_if{imb}_{method}_s[0-9]"))
        (summary,) = summarize(load_results(runs))
        mean_row = next(r for r in doc if r["method (recipe)"].strip("*") == f"{name}, seed mean")
        for column, key in COLUMNS.items():
            # the seed-mean row gives the groups as means (no std)
            expected = summary[key].split(" ± ")[0] if column in ("many", "medium", "few") else summary[key]
            assert mean_row[column].strip("*") == expected, (imb, name, column)
        for run in runs:
            (one,) = summarize(load_results([run]))
            seed_row = next(r for r in doc if r["method (recipe)"] == f"{name}, seed {one['seed_list'][0]}")
            for column, key in COLUMNS.items():
                assert seed_row[column].split(" (")[0] == one[key], (run.name, column)


def test_results_paired_table_equals_longtail_report_against_ce():
    """The paired-by-seed table, as the two `longtail report ... --against ce` commands print it."""
    archive = ROOT / "docs" / "results"
    other = sorted(p for imb in ("200", "50", "10") for p in archive.glob(f"cifar100_lt_if{imb}_*"))
    if100 = sorted(archive.glob("cifar100_lt_if100_ce_*")) + sorted(archive.glob("cifar100_lt_if100_gala_reference_s*"))
    printed = paired_table(summarize(load_results(other)), "ce") + paired_table(summarize(load_results(if100)), "ce")
    section = RESULTS[RESULTS.index("## CIFAR-100-LT reproduction"):]
    doc = markdown_rows(section, "| setting | method | shared seeds | difference | +PR difference |")
    assert len(doc) == 4
    for r in doc:
        assert "| " + " | ".join(r.values()) + " |" in printed.splitlines(), r
