"""With eval.test=false (while choosing settings) a run never reads its test split."""
import json

import pytest
import yaml
from test_run_safety import digits_config

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


def test_a_validation_only_run_without_validation_is_refused(tmp_path):
    data = yaml.safe_load(digits_config(tmp_path).read_text())
    data["eval"] = {**data.get("eval", {}), "test": False}
    data["data"]["val_per_class"] = 0
    with pytest.raises(ConfigError, match="eval.test=false keeps validation figures only"):
        train_mod.train(config_from_dict({**data, "out_dir": str(tmp_path), "run_name": "run"}))
    assert not (tmp_path / "run").exists()  # refused before the run folder was made
