"""The README's CIFAR-100-LT table agrees with the archived run files in docs/results/.

Every row whose seeds are all archived is recomputed with `longtail report`'s own summary from the
runs' results.json. (Six IF100 rows are not: their seed-0 run files were lost with the machine
that made them, and docs/RESULTS.md lists those seed-0 figures run by run.)"""
from pathlib import Path

import pytest
from conftest import markdown_rows

from longtail.report import load_results, summarize

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
