"""docs/RESULTS.md's generated tables are what their commands print from the archived runs in
docs/results/, the README's results table agrees with those runs, and the runs recorded from lost
files carry the settings of their archived seeds."""
import glob
import json
import re
import shlex
from pathlib import Path

import pytest
from conftest import markdown_rows

from longtail import cli
from longtail.report import load_results, published_figure, summarize

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT / "docs" / "results"
RESULTS = (ROOT / "docs" / "RESULTS.md").read_text()

# a generated block: the command shown, the same command in the opening marker, the command's output
BLOCK = re.compile(r"^`(?P<shown>[^`\n]+)`\n\n<!-- generated: (?P<command>[^\n]+?) -->\n(?P<output>.*?)"
                   r"\n<!-- end generated -->$", re.M | re.S)


def generated_blocks(text: str) -> list[re.Match]:
    return list(BLOCK.finditer(text))


def braces(word: str) -> list[str]:
    """A shell's brace expansion: a{b,c}d -> abd acd."""
    found = re.search(r"\{([^{}]*,[^{}]*)\}", word)
    if not found:
        return [word]
    return [w for part in found[1].split(",") for w in braces(word[:found.start()] + part + word[found.end():])]


def command_argv(command: str) -> list[str]:
    """The argv of `longtail report ...` for cli.main, expanded as a shell does from the repository
    root: braces, then each word's glob, sorted."""
    words = shlex.split(command)
    assert words[:2] == ["longtail", "report"], command
    argv = []
    for word in (w for given in words[1:] for w in braces(given)):
        if any(c in word for c in "*?["):
            matched = sorted(glob.glob(str(ROOT / word)))
            assert matched, f"{word} matches nothing"
            argv += matched
        else:
            argv.append(word)
    return argv


def test_every_generated_block_is_marked_whole_and_shows_its_command():
    blocks = generated_blocks(RESULTS)
    assert len(blocks) >= 5
    assert len(blocks) == RESULTS.count("<!-- generated:") == RESULTS.count("<!-- end generated -->")
    for block in blocks:
        assert block["shown"] == block["command"]
        # a block shows what the command prints; it writes no file
        assert not {"--out", "--plot", "--csv"} & set(shlex.split(block["command"]))


@pytest.mark.parametrize("index", range(len(generated_blocks(RESULTS))))
def test_generated_block_is_what_its_command_prints(index, capsys):
    block = generated_blocks(RESULTS)[index]
    assert cli.main(command_argv(block["command"])) == 0
    printed = capsys.readouterr()
    assert printed.err == ""  # no run left out
    assert printed.out.strip("\n") == block["output"].strip("\n"), block["command"]


def test_the_pages_links_lead_to_files_of_the_repository():
    for target in re.findall(r"\]\(([^)#]+)\)", RESULTS):
        path = (ROOT / "docs" / target).resolve()
        if ROOT in path.parents:  # SPEC lies beside the repository
            assert path.exists(), target


# README "Results": (IF, method cell) -> the run folders behind the row
README_ROWS = {
    ("200", "GALA (GALA's)"): "cifar100_lt_if200_gala_reference_s*",
    ("200", "CE (LDAM-DRW's)"): "cifar100_lt_if200_ce_s*",
    ("100", "GALA (GALA's)"): "cifar100_lt_if100_gala_reference_s*",
    ("100", "GALA, paper formula (GALA's)"): "cifar100_lt_if100_gala_paper_s*",
    ("100", "LA (GALA's)"): "cifar100_lt_if100_la_s*",
    ("100", "Balanced Softmax (GALA's)"): "cifar100_lt_if100_bs_s*",
    ("100", "GCL, stage one (GALA's)"): "cifar100_lt_if100_gcl_s[0-9]",
    ("100", "GALA (LDAM-DRW's)"): "cifar100_lt_if100_gala_reference_ldam_recipe_s*",
    ("100", "LA (LDAM-DRW's)"): "cifar100_lt_if100_la_ldam_recipe_s*",
    ("100", "LDAM-DRW (LDAM-DRW's)"): "cifar100_lt_if100_ldam_drw_s*",
    ("100", "ALA with DRW (LDAM-DRW's)"): "cifar100_lt_if100_ala_s*",
    ("100", "CE (LDAM-DRW's)"): "cifar100_lt_if100_ce_s*",
    ("50", "GALA (GALA's)"): "cifar100_lt_if50_gala_reference_s*",
    ("50", "CE (LDAM-DRW's)"): "cifar100_lt_if50_ce_s*",
    ("10", "GALA (GALA's)"): "cifar100_lt_if10_gala_reference_s*",
    ("10", "CE (LDAM-DRW's)"): "cifar100_lt_if10_ce_s*",
}


def test_readme_results_table_is_the_summary_of_the_archived_runs():
    readme = (ROOT / "README.md").read_text()
    rows = {(r["IF"], r["method (recipe)"]): r
            for r in markdown_rows(readme[readme.index("## Results"):], "| IF | method (recipe) |")}
    assert sorted(rows) == sorted(README_ROWS)
    for key, pattern in README_ROWS.items():
        (row,) = summarize(load_results(sorted(ARCHIVE.glob(pattern))))  # one setting, its seeds averaged
        shown = rows[key]
        assert (shown["seeds"], shown["top-1"], shown["+PR"]) == (str(row["seeds"]), row["raw.top1"], row["pr.top1"]), key
        assert shown["published"] == published_figure(row["dataset"], row["imb_factor"], row["method"]), key


def test_runs_recorded_from_lost_files_are_seeds_of_their_archived_setting():
    recorded = [p for p in sorted(ARCHIVE.glob("*/results.json")) if "recorded_from" in json.loads(p.read_text())]
    assert len(recorded) == 6
    for path in recorded:
        run = json.loads(path.read_text())
        siblings = [json.loads((ARCHIVE / p.name / "results.json").read_text()) for p in
                    ARCHIVE.glob(path.parent.name.rsplit("_s", 1)[0] + "_s[0-9]") if p != path.parent]
        assert siblings, path
        for other in siblings:
            assert "recorded_from" not in other
            for key in ("settings", "setting", "method", "dataset", "imb_factor", "epochs"):
                assert run[key] == other[key], (path, key)
        # the figures a table shows are there; what was not recorded is null, never a guess
        figures = run["checkpoints"]["best_val"]
        assert list(run["checkpoints"]) == ["best_val"]
        assert all(figures[v][m] is not None for v in ("raw", "pr") for m in ("top1", "many", "medium", "few"))
        assert figures["pr_transductive"]["many"] is None and figures["raw"]["per_class"] is None
