"""With eval.test=false (while choosing settings) a run never reads its test split."""
import json

import numpy as np
import pytest
import yaml
from test_run_safety import digits_config

from longtail import cli
from longtail import train as train_mod
from longtail.config import ConfigError, config_from_dict


class Untouchable:
    """A test split that fails the moment anything looks at it."""

    def __getattr__(self, name):
        raise AssertionError(f"the test split was read ({name})")

    def __len__(self):
        raise AssertionError("the test split was read (len)")


@pytest.fixture
def guarded_test_split(monkeypatch):
    """Every benchmark the trainer loads has a test split that fails when anything reads it; the
    fixture's value lifts the guard."""
    real = train_mod.load_benchmark

    def guarded(data, **kw):
        bench = real(data, **kw)
        bench.test = Untouchable()
        return bench
    monkeypatch.setattr(train_mod, "load_benchmark", guarded)
    return lambda: monkeypatch.setattr(train_mod, "load_benchmark", real)


@pytest.mark.parametrize("test", [False, True])
def test_a_validation_only_run_never_touches_the_test_split(test, tmp_path, guarded_test_split):
    data = yaml.safe_load(digits_config(tmp_path).read_text())
    data["eval"] = {**data.get("eval", {}), "test": test, "track_test": True}
    cfg = config_from_dict({**data, "out_dir": str(tmp_path), "run_name": "run"})
    if test:  # the guard is real: a run that tests does trip it
        with pytest.raises(AssertionError, match="the test split was read"):
            train_mod.train(cfg)
        return
    run = train_mod.train(cfg)
    results = json.loads((run / "results.json").read_text())
    assert results["test_evaluated"] is False and results["checkpoints"] == {}
    assert results["best_test_epoch"] is None
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("val_acc" in r and not any(k.startswith("test") for k in r) for r in log)
    assert results["best_val"]["top1"] == max(r["val_acc"] for r in log)
    # the selected weights' validation figures by shot group, and their logits (no test split in them)
    assert results["validation"]["top1"] == pytest.approx(results["best_val"]["top1"], abs=1e-4)
    with np.load(run / "logits.npz") as stored:
        assert sorted(stored.files) == ["val_labels", "val_logits"]
        expected = shot_group_accuracies(stored["val_logits"], stored["val_labels"], results["data"]["class_counts"])
    for group, value in expected.items():
        assert results["validation"][group] == pytest.approx(value, abs=1e-3), group


def shot_group_accuracies(logits, labels, counts) -> dict:
    """Mean per-class accuracy over the classes with more than 100, 20 to 100, and fewer than 20
    training images (SPEC section 3), in numpy."""
    counts = np.asarray(counts)
    correct = logits.astype(np.float32).argmax(1) == labels
    per_class = np.array([correct[labels == c].mean() * 100 for c in range(len(counts))])
    groups = {"many": counts > 100, "medium": (counts >= 20) & (counts <= 100), "few": counts < 20}
    return {g: float(per_class[m].mean()) for g, m in groups.items() if m.any()}


def test_a_tested_run_stores_its_validation_figures_too(tmp_path, capsys):
    run = train_mod.train(config_from_dict({**yaml.safe_load(digits_config(tmp_path).read_text()),
                                            "out_dir": str(tmp_path), "run_name": "run"}))
    results = json.loads((run / "results.json").read_text())
    with np.load(run / "logits.npz") as stored:
        expected = shot_group_accuracies(stored["val_logits"], stored["val_labels"], results["data"]["class_counts"])
    assert results["validation"]["top1"] == pytest.approx(results["best_val"]["top1"], abs=1e-4)
    assert all(results["validation"][g] == pytest.approx(v, abs=1e-3) for g, v in expected.items())
    assert cli.main(["report", str(run), "--validation"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| digits-lt"))
    assert [f"{results['validation'][g]:.2f}" for g in ("many", "medium", "few")] == row.split(" | ")[5:8]
    assert "| train s / run |" in out and row.endswith(f"| {results['train_time_s']:.2f} |")  # a short run: seconds


def test_a_validation_only_run_without_validation_is_refused(tmp_path):
    data = yaml.safe_load(digits_config(tmp_path).read_text())
    data["eval"] = {**data.get("eval", {}), "test": False}
    data["data"]["val_per_class"] = 0
    with pytest.raises(ConfigError, match="eval.test=false keeps validation figures only"):
        train_mod.train(config_from_dict({**data, "out_dir": str(tmp_path), "run_name": "run"}))
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_eval_of_a_validation_only_run_stays_on_validation(tmp_path, monkeypatch, capsys):
    data = yaml.safe_load(digits_config(tmp_path).read_text())
    data["eval"] = {**data.get("eval", {}), "test": False}
    run = train_mod.train(config_from_dict({**data, "out_dir": str(tmp_path), "run_name": "run"}))
    stored = json.loads((run / "results.json").read_text())["validation"]
    import longtail.data

    real, asked = longtail.data.load_benchmark, []

    def guarded(cfg, **kw):
        asked.append(kw.get("test", True))
        bench = real(cfg, **kw)
        if bench.test is not None:
            bench.test = Untouchable()
        return bench
    monkeypatch.setattr(longtail.data, "load_benchmark", guarded)
    assert cli.main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert asked == [False] and f"top-1 {stored['top1']:.2f}, many {stored['many']:.2f}" in out
    evaluated = json.loads((run / "eval-best.json").read_text())
    assert evaluated["validation"] == stored and evaluated["test_evaluated"] is False
    assert evaluated["checkpoints"] == {}
    assert cli.main(["eval", str(run), "--shifted-priors"]) == 2
    assert "--shifted-priors scores the test split; add eval.test=true" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="the test split was read"):  # asked for explicitly, it is scored
        cli.main(["eval", str(run), "eval.test=true"])
