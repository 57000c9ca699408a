"""`longtail sweep`: the search ranks settings on validation without ever reading the test split, and
the chosen setting's final runs are trained and tested."""
import json
import math

import pytest
import yaml
from test_run_safety import digits_config
from test_validation_only import guarded_test_split  # noqa: F401  (a fixture)

from longtail import cli
from longtail.config import ConfigError
from longtail.sweep import rank, read_spec, run_all, search_runs

pytestmark = pytest.mark.xdist_group("sweep")


def write_spec(tmp_path, **changes):
    spec = {"base": str(digits_config(tmp_path)), "fixed": ["progress=quiet"],
            "grid": {"optim.lr": [0.0005, 0.05], "optim.weight_decay": [5.0e-4]},
            "search": ["optim.epochs=2"], "final": {"seeds": [0, 1], "methods": {"ce": [], "la": ["loss.name=la"]}},
            "out": str(tmp_path / "sweep"), **changes}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_search_never_reads_the_test_split_and_ranks_on_validation(tmp_path, guarded_test_split, capsys):  # noqa: F811
    spec = read_spec(write_spec(tmp_path))
    assert run_all(spec, stage="search") == []  # search only: nothing final yet
    runs = search_runs(spec)
    assert all(r.finished for r in runs)
    val = {r.folder.name: json.loads((r.folder / "results.json").read_text())["best_val"]["top1"] for r in runs}
    assert all(json.loads((r.folder / "results.json").read_text())["test_evaluated"] is False for r in runs)
    ranked = rank(runs)
    assert [best for best, _ in ranked] == sorted(val.values(), reverse=True)
    assert ranked[0][1].folder.name == max(val, key=val.get)
    assert "| setting (search schedule) | best validation top-1 |" in capsys.readouterr().out
    # the same ranking as a report of the search's (validation-only) runs
    assert cli.main(["report", str(runs[0].folder.parent), "--validation"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| digits-lt")]
    lrs = [float(line.split("optim.lr=")[1].split("]")[0]) for line in table]
    assert lrs == [float(r.folder.name.split("lr=")[1].split(",")[0]) for _, r in ranked]
    assert all(f"{val[r.folder.name]:.2f}" in line for line, (_, r) in zip(table, ranked))
    # the guard is real: the final runs test once, and reading the test split trips it
    with pytest.raises(AssertionError, match="the test split was read"):
        run_all(spec, stage="final")
    guarded_test_split()  # lifted
    final = run_all(spec, stage="final")
    chosen = ranked[0][1].folder.name.rsplit("_s", 1)[0]  # the setting, without the search seed
    assert [r.folder.name for r in final] == ["ce_s0", "la_s0", "ce_s1", "la_s1"]
    assert all(r.folder.parent.name == chosen and r.finished for r in final)
    for run in final:
        results = json.loads((run.folder / "results.json").read_text())
        assert results["checkpoints"]["best_val"]["raw"]["num_samples"] == 500  # tested once, at the end
        assert results["epochs"] == 2 and results["method"] == run.folder.name.split("_")[0]


@pytest.mark.slow
def test_a_search_in_processes_of_its_own_never_opens_the_test_file(tmp_path, shared_data):
    data = tmp_path / "data" / "cifar-100-python"
    data.mkdir(parents=True)
    for name in ("train", "meta"):  # no test file: opening the test split fails
        (data / name).symlink_to(shared_data / "cifar-100-python" / name)
    base = tmp_path / "cifar.yaml"
    base.write_text(yaml.safe_dump({
        "data": {"name": "cifar100-lt", "root": str(data.parent), "limit_per_class": 1, "limit_eval_per_class": 1,
                 "augment": "crop_flip", "workers": 0},
        "model": {"name": "convnet"}, "loss": {"name": "ce"},
        "optim": {"epochs": 1, "batch_size": 32, "warmup_epochs": 0}, "precision": "fp32", "channels_last": False}))
    spec = write_spec(tmp_path, base=str(base), grid={"optim.lr": [0.01, 0.1]}, search=[])
    assert cli.main(["sweep", str(spec), "--stage", "search", "--jobs", "2"]) == 0
    assert all(json.loads((r.folder / "results.json").read_text())["test_evaluated"] is False
               for r in search_runs(read_spec(spec)))
    # a run that tests does need the file
    assert cli.main(["train", str(base), "--run-dir", str(tmp_path / "tested")]) == 2


def test_a_run_failing_in_a_process_of_its_own_is_one_line(tmp_path, capsys):
    missing = tmp_path / "missing"  # a valid sweep whose runs each stop: their list files are not there
    spec = write_spec(tmp_path, fixed=["progress=quiet", "data.name=lists", f"data.train_list={missing}/train.txt",
                                       f"data.test_list={missing}/test.txt", f"data.root={missing}"])
    assert cli.main(["sweep", str(spec), "--stage", "search", "--jobs", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "stopped with exit code 2; its log: " in err and "\n" not in err
    log = err.rsplit("its log: ", 1)[1]
    assert "error: " in open(log).read() and str(missing) in open(log).read()  # the run's own reason


def test_a_sweep_started_again_trains_only_what_is_missing(tmp_path, monkeypatch, capsys):
    spec_path = write_spec(tmp_path, final={"seeds": [0], "methods": {"ce": []}})
    assert cli.main(["sweep", str(spec_path)]) == 0
    out = capsys.readouterr().out
    assert "chosen on validation:" in out and "| digits-lt | ce |" in out  # the final runs' table
    trained = []
    monkeypatch.setattr("longtail.sweep.train", lambda *a, **k: trained.append(a))
    assert cli.main(["sweep", str(spec_path)]) == 0
    assert trained == []
    assert cli.main(["sweep", str(spec_path), "--dry-run"]) == 0
    assert "search  done" in capsys.readouterr().out


def test_a_bad_sweep_is_refused_before_anything_trains(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown sweep keys"):
        read_spec(write_spec(tmp_path, seeds=[1]))
    with pytest.raises(ConfigError, match="grid must map config keys to non-empty lists"):
        read_spec(write_spec(tmp_path, grid={"optim.lr": []}))
    with pytest.raises(ConfigError, match="points must be a list of settings"):
        read_spec(write_spec(tmp_path, points=[{"optim.lr": 0.1}, {}]))
    with pytest.raises(ConfigError, match="needs settings to search: a grid, points, or both"):
        read_spec(write_spec(tmp_path, grid={}))
    assert cli.main(["sweep", str(write_spec(tmp_path, points=[{"optim.momentum": 2}]))]) == 2
    assert "optim.momentum" in capsys.readouterr().err  # a listed point is checked as the grid's are
    assert cli.main(["sweep", str(write_spec(tmp_path, grid={"optim.lr": [0.1, -1]}))]) == 2
    assert "optim.lr must be > 0, got -1" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_points_are_searched_beside_the_grid_each_setting_once(tmp_path):
    grid = {"optim.lr": [0.01, 0.1], "optim.weight_decay": [5.0e-4]}
    points = [{"optim.lr": 0.05, "optim.weight_decay": 1.0e-3},  # keys that move together
              {"optim.weight_decay": 5.0e-4, "optim.lr": 0.1},    # already in the grid, in another order
              {"optim.epochs": 3}]                                # one key on the base config
    runs = search_runs(read_spec(write_spec(tmp_path, grid=grid, points=points)))
    assert [r.folder.name for r in runs] == ["lr=0.01,weight_decay=0.0005_s0", "lr=0.1,weight_decay=0.0005_s0",
                                              "lr=0.05,weight_decay=0.001_s0", "epochs=3_s0"]
    assert runs[2].overrides[1:3] == ["optim.lr=0.05", "optim.weight_decay=0.001"]
    assert "optim.epochs=3" in runs[3].overrides and not any("optim.lr" in o for o in runs[3].overrides)
    only_points = search_runs(read_spec(write_spec(tmp_path, grid={}, points=points[:1])))
    assert [r.folder.name for r in only_points] == ["lr=0.05,weight_decay=0.001_s0"]


def test_a_machines_runtime_keys_reach_every_run_and_leave_the_setting_alone(tmp_path, capsys):
    spec_path = write_spec(tmp_path, grid={"optim.lr": [0.05]}, final={"seeds": [0], "methods": {"ce": []}})
    assert cli.main(["sweep", str(spec_path), "check_every=3", "--stage", "search"]) == 0
    run = search_runs(read_spec(spec_path, ["check_every=3"]))[0]
    assert yaml.safe_load((run.folder / "config.yaml").read_text())["check_every"] == 3
    plain = search_runs(read_spec(spec_path))[0]
    from longtail.config import load_config, setting_key
    base = read_spec(spec_path).base
    assert setting_key(load_config(base, run.overrides)) == setting_key(load_config(base, plain.overrides))
    assert "check_every=3" in run.overrides and "check_every=3" not in plain.overrides
    # refused before anything trains: a key that changes what runs learn, and the keys the sweep sets
    for text, why in (("optim.lr=0.2", "optim.lr changes what the runs learn, not how they are made: put "
                                       "optim.lr=0.2 in the sweep's fixed list"),
                      ("eval.test=true", "eval.test is set by the sweep itself")):
        refused = write_spec(tmp_path, out=str(tmp_path / "refused"))
        assert cli.main(["sweep", str(refused), text]) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and "\n" not in err
    assert not (tmp_path / "refused").exists()


def test_the_shipped_sweeps_are_valid():
    from pathlib import Path

    sweeps = sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml"))
    assert sweeps
    for path in sweeps:
        spec = read_spec(path)  # every setting and every final method loads as a config
        grid = math.prod(len(values) for values in spec.grid.values()) if spec.grid else 0
        assert grid <= len(search_runs(spec)) <= grid + len(spec.points)
