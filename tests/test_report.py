import statistics

import pytest

from longtail.report import markdown_table, summarize


def _run(seed, top1, setting="abc", method="gala-reference", model="resnet32", ckpts=("best_val", "last")):
    variant = {"top1": top1, "many": top1 + 10, "medium": top1, "few": top1 - 10}
    return {"dataset": "cifar100-lt", "imb_factor": 100, "method": method, "seed": seed, "setting": setting,
            "config": {"model": {"name": model}}, "_dir": f"run-{setting}-{seed}",
            "best_test_epoch": {"epoch": 3, "top1": top1 + 1},
            "checkpoints": {c: {"raw": variant, "pr": variant, "pr_transductive": variant} for c in ckpts}}


def test_seeds_of_one_setting_are_averaged_and_other_settings_kept_apart():
    rows = summarize([_run(0, 50.0), _run(1, 52.0), _run(0, 40.0, setting="other-lambda"),
                      _run(0, 45.0, model="resnext50_32x4d", setting="x")])
    by = {(r["setting"], r["model"]): r for r in rows}
    main = by[("abc", "resnet32")]
    assert main["seeds"] == 2 and main["seed_list"] == [0, 1]
    assert main["raw.top1"] == f"{51.0:.2f} ± {statistics.stdev([50.0, 52.0]):.2f}"
    assert by[("other-lambda", "resnet32")]["raw.top1"] == "40.00"
    assert by[("x", "resnext50_32x4d")]["seeds"] == 1
    table = markdown_table(rows)
    assert "| cifar100-lt IF100 | gala-reference | resnet32 | 2 | 51.00 ± 1.41 |" in table
    assert "selected on the test" in table


def test_a_repeated_seed_or_a_missing_checkpoint_is_refused():
    with pytest.raises(ValueError, match="repeat a seed"):
        summarize([_run(0, 50.0), _run(0, 51.0)])
    with pytest.raises(ValueError, match="no 'best_val' checkpoint"):
        summarize([_run(0, 50.0, ckpts=("last",))])
    assert summarize([_run(0, 50.0, ckpts=("last",))], checkpoint="last")[0]["raw.top1"] == "50.00"
