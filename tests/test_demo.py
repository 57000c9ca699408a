"""`longtail demo`, the README's main job: every method trained, and a table that agrees with the runs."""
import csv
import json
import re
import statistics

import pytest
from conftest import markdown_rows

from longtail import cli

pytestmark = pytest.mark.slow
METHODS = {"ce": "ce", "la": "la", "ala": "ala", "gala": "gala-reference"}  # run folder -> table label


def _table_rows(summary: str) -> dict[str, dict[str, str]]:
    """The summary table's rows, keyed by the method column."""
    return {r["method"]: r for r in markdown_rows(summary, "| dataset | method |")}


def _only_child(folder):
    children = list(folder.iterdir())
    assert len(children) == 1, children
    return children[0]


def test_demo_trains_each_method_at_each_seed_and_tables_their_mean(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--epochs", "2", "--seed", "3", "--seeds", "2"]) == 0
    out = _only_child(tmp_path)  # one timestamped demo folder
    assert {p.name for p in out.iterdir() if p.is_dir()} == {f"{m}_s{s}" for m in METHODS for s in (3, 4)}
    rows = _table_rows((out / "summary.md").read_text())
    assert set(rows) == set(METHODS.values())
    for folder, label in METHODS.items():
        results = [json.loads((out / f"{folder}_s{s}" / "results.json").read_text()) for s in (3, 4)]
        assert [r["seed"] for r in results] == [3, 4]
        assert [r["epochs"] for r in results] == [2, 2]
        # the table's top-1 is the mean ± sample std of the two runs' validation-selected top-1
        top1 = [r["checkpoints"]["best_val"]["raw"]["top1"] for r in results]
        assert rows[label]["seeds"] == "2"
        assert rows[label]["top-1"] == f"{statistics.mean(top1):.2f} ± {statistics.stdev(top1):.2f}"
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (out / "summary.csv").open() as f:
        numbers = {r["method"]: r for r in csv.DictReader(f)}
    for folder, label in METHODS.items():
        top1 = [json.loads((out / f"{folder}_s{s}" / "results.json").read_text())["checkpoints"]["best_val"]["raw"]["top1"]
                for s in (3, 4)]
        assert float(numbers[label]["raw_top1_mean"]) == pytest.approx(statistics.mean(top1), abs=1e-4)
        assert numbers[label]["seed_list"] == "3 4"
    # each method minus CE, seed by seed
    def top1(folder, seed):
        return json.loads((out / f"{folder}_s{seed}" / "results.json").read_text())["checkpoints"]["best_val"]["raw"]["top1"]

    summary = (out / "summary.md").read_text()
    assert "Paired by seed against ce" in summary
    for folder in ("la", "ala", "gala"):
        diffs = [top1(folder, s) - top1("ce", s) for s in (3, 4)]
        assert f"| {METHODS[folder]} | 3 4 | {statistics.mean(diffs):+.2f} ± {statistics.stdev(diffs):.2f} (n=2) |" in summary
    printed = capsys.readouterr().out
    assert (out / "summary.md").read_text().strip() in printed
    assert "One seed" not in printed


def test_demo_default_is_one_seed_with_plain_folder_names(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path), "--epochs", "1", "--seed", "5"]) == 0
    out = _only_child(tmp_path)
    assert {p.name for p in out.iterdir() if p.is_dir()} == set(METHODS)
    for folder in METHODS:
        assert json.loads((out / folder / "results.json").read_text())["seed"] == 5
    rows = _table_rows((out / "summary.md").read_text())
    assert {r["seeds"] for r in rows.values()} == {"1"}
    # one seed has no spread to show
    assert not any("±" in r["top-1"] for r in rows.values())
    assert "`--seeds 3` gives mean ± std" in capsys.readouterr().out
    assert "Paired by seed" not in (out / "summary.md").read_text()  # one seed: no paired table


@pytest.mark.parametrize("flag, value", [("--seeds", "0"), ("--epochs", "0"), ("--epochs", "-2"), ("--seeds", "two")])
def test_demo_rejects_a_count_below_one_before_training(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--out", str(tmp_path), flag, value])
    assert exc.value.code == 2
    assert re.search(rf"argument {flag}: must be (>= 1|a whole number)", capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written
