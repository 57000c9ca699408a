"""`longtail eval RUN --shifted-priors` and `longtail report --shifted` on the demo's CE run, and a
run's stored logits standing in for its checkpoint."""
import copy
import json

import numpy as np
import pytest
import torch

from longtail import cli
from longtail.config import apply_overrides, config_from_dict
from longtail.rundir import load_logits
from longtail.shifted import shifted_prior_table
from longtail.train import train

pytestmark = pytest.mark.xdist_group("shifted_cli")


@pytest.fixture(scope="module")
def demo_ce(tmp_path_factory):
    """The demo's CE run (the embedded long-tailed digits, 30 epochs)."""
    out = tmp_path_factory.mktemp("demo")
    data = copy.deepcopy(cli.DEMO_CONFIG)
    data.update(out_dir=str(out), run_name="ce")
    return train(config_from_dict(apply_overrides(data, ["loss.name=ce"])))


def test_ce_on_the_demo_fares_better_on_a_head_heavy_test_set_and_both_corrections_help(demo_ce, capsys):
    assert cli.main(["eval", str(demo_ce), "--shifted-priors"]) == 0
    out = capsys.readouterr().out
    assert "| test prior | raw | +PR (tau on val) | +LA to known prior | +LA to EM-estimated prior |" in out
    rows = {r["prior"]: r for r in json.loads((demo_ce / "eval-best.json").read_text())["checkpoints"]["best"]["shifted"]}
    assert list(rows) == ["forward-50", "forward-25", "forward-10", "forward-5", "forward-2", "uniform",
                          "backward-2", "backward-5", "backward-10", "backward-25", "backward-50"]
    assert rows["forward-50"]["raw"] > rows["backward-50"]["raw"]
    assert rows["backward-50"]["known_prior"] > rows["backward-50"]["raw"]
    assert rows["backward-50"]["estimated_prior"] > rows["backward-50"]["raw"]
    # uniform is the balanced test set's top-1 (balanced: its per-class mean)
    best = json.loads((demo_ce / "results.json").read_text())["checkpoints"]["best_val"]
    assert rows["uniform"]["raw"] == pytest.approx(best["raw"]["top1"], abs=1e-9)


def test_report_adds_the_shifted_columns_when_asked(demo_ce, capsys):
    assert cli.main(["eval", str(demo_ce), "--shifted-priors"]) == 0
    rows = {r["prior"]: r for r in json.loads((demo_ce / "eval-best.json").read_text())["checkpoints"]["best"]["shifted"]}
    capsys.readouterr()
    assert cli.main(["report", str(demo_ce)]) == 0
    assert "backward-50" not in capsys.readouterr().out  # only when asked
    assert cli.main(["report", str(demo_ce), "--shifted", "backward-50"]) == 0
    table = capsys.readouterr().out
    head = next(line for line in table.splitlines() if line.startswith("| dataset"))
    assert head.endswith("| backward-50 raw | backward-50 +PR | backward-50 +LA known | backward-50 +LA EM |")
    row = next(line for line in table.splitlines() if line.startswith("| digits-lt"))
    cells = [c.strip() for c in row.strip("|").split("|")][-4:]
    assert cells == [f"{rows['backward-50'][k]:.2f}" for k in ("raw", "pr", "known_prior", "estimated_prior")]


def test_report_by_prior_puts_one_prior_on_each_line_in_the_protocols_order(demo_ce, tmp_path, capsys):
    assert cli.main(["eval", str(demo_ce), "--shifted-priors"]) == 0
    rows = json.loads((demo_ce / "eval-best.json").read_text())["checkpoints"]["best"]["shifted"]
    capsys.readouterr()
    assert cli.main(["report", str(demo_ce), "--by-prior"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert lines[0] == "| test prior | ce raw | ce +PR | ce +LA known | ce +LA EM |"
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
    want = [r["prior"] for r in rows]  # eval's order: forward-50 ... uniform ... backward-50
    assert [cells[0] for cells in body] == want and len(want) == 11
    for cells, r in zip(body, rows):
        assert cells[1:] == [f"{r[k]:.2f}" for k in ("raw", "pr", "known_prior", "estimated_prior")]
    out = tmp_path / "by_prior.md"
    assert cli.main(["report", str(demo_ce), "--by-prior", "--shifted", "backward-50", "uniform", "--out", str(out)]) == 0
    chosen = [line.split("|")[1].strip() for line in out.read_text().splitlines() if line.startswith("| ")][1:]
    assert chosen == ["backward-50", "uniform"]


def test_the_stored_logits_are_the_selected_checkpoints_and_stand_in_for_it(demo_ce, tmp_path, capsys):
    stored = load_logits(demo_ce)
    assert cli.main(["eval", str(demo_ce)]) == 0
    # the best checkpoint's logits, rounded to float16: its predictions again
    best = json.loads((demo_ce / "results.json").read_text())["checkpoints"]["best_val"]
    test_logits, test_labels = stored["test"]
    assert len(test_labels) == best["raw"]["num_samples"] and stored["val"][0].shape[1] == 10
    top1 = 100 * float((test_logits.argmax(1) == test_labels).float().mean())
    assert top1 == pytest.approx(best["raw"]["top1"], abs=0.5)
    # a run folder with only its results and logits (as archived) is evaluated from them
    archived = tmp_path / "archived"
    archived.mkdir()
    for name in ("results.json", "logits.npz", "config.yaml"):
        (archived / name).write_bytes((demo_ce / name).read_bytes())
    capsys.readouterr()
    assert cli.main(["eval", str(archived), "--shifted-priors"]) == 0
    assert "from the stored float16 logits" in (archived / "eval-logits.json").read_text()
    again = json.loads((archived / "eval-logits.json").read_text())["checkpoints"]["logits"]
    assert again["raw"]["top1"] == pytest.approx(top1, abs=1e-4)
    counts = json.loads((demo_ce / "results.json").read_text())["data"]["class_counts"]
    want = shifted_prior_table(*stored["val"], *stored["test"], counts, list(np.round(np.arange(21) * 0.1, 1)))
    assert again["shifted"] == json.loads(json.dumps(want))
    assert torch.equal(stored["test"][1], load_logits(archived)["test"][1])


def test_report_of_the_last_checkpoint_takes_no_shifted_columns_of_the_best(demo_ce, capsys):
    assert cli.main(["eval", str(demo_ce), "--shifted-priors"]) == 0  # eval-best.json: the best checkpoint's
    capsys.readouterr()
    assert cli.main(["report", str(demo_ce), "--checkpoint", "last", "--shifted", "backward-50"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| digits-lt"))
    assert [c.strip() for c in row.strip("|").split("|")][-4:] == ["-"] * 4
