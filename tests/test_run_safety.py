"""A run folder is never overwritten or lost to a user's mistake, a damaged file or a stop request;
every such case is a one-line error from the command line (exit 2), not a traceback."""
import copy
import hashlib
import json
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml

from longtail import atomic, cli
from longtail import train as train_mod
from longtail.config import config_from_dict
from longtail.data import load_benchmark

pytestmark = pytest.mark.xdist_group("run_safety")


def digits_config(tmp_path: Path, name: str = "digits.yaml", **changes) -> Path:
    """The demo's embedded-digits config, 2 epochs: a whole run takes about a second."""
    data = copy.deepcopy(cli.DEMO_CONFIG)
    data["optim"]["epochs"] = 2
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data[section][key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def md5s(folder: Path) -> dict:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    assert cli.main(["train", str(digits_config(tmp)), "--run-dir", str(tmp / "run")]) == 0
    return tmp / "run"


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        if p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_a_finished_run_without_last_pt_is_not_overwritten(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "kept")
    (run / "last.pt").unlink()  # deleted to save space: best.pt and results.json remain
    before = md5s(run)
    assert cli.main(["train", str(digits_config(tmp_path)), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run (results.json): `longtail eval" in err and "Traceback" not in err
    assert md5s(run) == before


def test_a_run_killed_before_its_first_last_pt_can_start_again(finished, tmp_path):
    # best.pt is written at epoch 1's validation, last.pt at the end of the epoch: a kill between leaves
    # a folder with nothing to continue, which `train` (and benchmarks/reproduce_cifar.py) must reuse
    run = tmp_path / "early"
    run.mkdir()
    for name in ("best.pt", "config.yaml", "environment.json"):
        (run / name).write_bytes((finished / name).read_bytes())
    assert cli.main(["train", str(digits_config(tmp_path)), "--run-dir", str(run)]) == 0
    assert (run / "results.json").exists()


def test_resuming_a_finished_run_is_refused_and_changes_nothing(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / "done")
    before = md5s(run)
    assert cli.main(["train", "--resume", str(run)]) == 2
    assert "is finished (it holds results.json); nothing to resume" in capsys.readouterr().err
    assert md5s(run) == before


def test_a_batch_larger_than_the_training_set_is_refused_before_a_folder_is_made(tmp_path, capsys):
    n_train = None

    def count(cfg):  # the training images this config loads, counted independently of the check
        nonlocal n_train
        n_train = len(load_benchmark(cfg.data).train)
    count(config_from_dict(yaml.safe_load(digits_config(tmp_path).read_text())))
    big = n_train + 1
    cfg = digits_config(tmp_path, "big.yaml", optim__batch_size=big, optim__drop_last=True)
    assert cli.main(["train", str(cfg), "--run-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert f"optim.batch_size {big} is larger than the {n_train} training images" in err
    assert not (tmp_path / "empty").exists()
    # without drop_last the one partial batch trains
    cfg = digits_config(tmp_path, "partial.yaml", optim__batch_size=big, optim__drop_last=False, optim__epochs=1)
    assert cli.main(["train", str(cfg), "--run-dir", str(tmp_path / "partial")]) == 0
    log = [json.loads(line) for line in (tmp_path / "partial" / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["loss"] > 0 and log[0]["images_per_s"] > 0


@pytest.mark.parametrize("damage", ["truncated", "empty", "not_a_checkpoint"])
def test_a_damaged_checkpoint_is_a_clear_error_in_resume_eval_and_init_from(finished, tmp_path, capsys, damage):
    run = copy_run(finished, tmp_path / "damaged")
    (run / "results.json").unlink()  # as if stopped during the final evaluation
    whole = (run / "last.pt").read_bytes()
    data = {"truncated": whole[:len(whole) // 3], "empty": b""}.get(damage)
    if data is None:
        torch.save({"weights": torch.zeros(3)}, run / "last.pt")
    else:
        (run / "last.pt").write_bytes(data)
    before = md5s(run)
    assert cli.main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"cannot resume: {run / 'last.pt'} is not" in err and "Traceback" not in err
    assert "copy it over last.pt" in err  # best.pt is offered as the way back
    assert md5s(run) == before
    assert cli.main(["eval", str(run / "last.pt")]) == 2
    assert f"{run / 'last.pt'} is not" in capsys.readouterr().err
    cfg = config_from_dict({**yaml.safe_load(digits_config(tmp_path).read_text()),
                            "model": {"name": "convnet", "init_from": str(run / "last.pt")}})
    with pytest.raises(ValueError, match=r"model.init_from: .*last.pt is not"):
        train_mod.train(cfg, tmp_path / "second")


def test_the_copied_best_pt_resumes_as_the_error_says(finished, tmp_path):
    run = copy_run(finished, tmp_path / "rescued")
    (run / "results.json").unlink()
    (run / "last.pt").write_bytes((run / "best.pt").read_bytes())  # as the damaged-last.pt error suggests
    best_epoch = torch.load(run / "best.pt", weights_only=True)["state"]["epoch"]
    assert cli.main(["train", "--resume", str(run)]) == 0
    log = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert log == [1, 2] and best_epoch in (1, 2)
    assert json.loads((run / "results.json").read_text())["epochs"] == 2


def test_a_half_written_log_line_does_not_block_resume(tmp_path, capsys):
    cfg = digits_config(tmp_path, optim__epochs=3)
    run = tmp_path / "cut"
    real_eval, calls = train_mod.predict, {"n": 0}

    def stop_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2's validation: the loop stops at the next step's check
            os.kill(os.getpid(), signal.SIGINT)
        return real_eval(*args, **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "predict", stop_in_epoch_two)
        assert cli.main(["train", str(cfg), "--run-dir", str(run)]) == 130
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"epoch": 3, "lr": 0.0\n\xff\xfe{"epo')  # lines cut short by a kill, bytes of a bad disk
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run)]) == 0
    assert f"dropped 2 unreadable line(s) from {run / 'metrics.jsonl'}" in capsys.readouterr().err
    log = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]


def test_a_stop_during_the_final_evaluation_stops_and_resume_finishes_it(tmp_path, capsys):
    run = tmp_path / "final"
    real = train_mod.evaluate_model

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "evaluate_model", interrupted)
        assert cli.main(["train", str(digits_config(tmp_path)), "--run-dir", str(run)]) == 130
    err = capsys.readouterr().err
    assert "interrupted during the final evaluation" in err and f"--resume {run}" in err
    assert not (run / "results.json").exists() and not (run / "results.json.tmp").exists()
    assert torch.load(run / "last.pt", weights_only=True)["state"]["epoch"] == 2
    assert cli.main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "all 2 epochs are trained; running the final evaluation" in out and f"run folder: {run}" in out
    assert json.loads((run / "results.json").read_text())["checkpoints"]["best_val"]["raw"]["top1"] > 0


def test_a_second_stop_request_stops_at_once_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    run = tmp_path / "twice"
    handler_before = signal.getsignal(signal.SIGINT)
    real_save = torch.save
    writes = []

    def two_requests_mid_write(obj, path, *args, **kwargs):
        writes.append(Path(path).name)
        Path(path).write_bytes(b"half a checkpoint")  # the write has begun when the requests come
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the second raises here
        return real_save(obj, path, *args, **kwargs)
    monkeypatch.setattr(torch, "save", two_requests_mid_write)
    assert cli.main(["train", str(digits_config(tmp_path)), "--run-dir", str(run)]) == 130
    assert "interrupted again before the next checkpoint" in capsys.readouterr().err
    assert writes == ["best.pt.tmp"]  # epoch 1's first checkpoint, stopped inside its write
    assert not list(run.glob("*.pt")) and not list(run.glob("*.tmp"))  # no partial file under either name
    assert signal.getsignal(signal.SIGINT) is handler_before  # the handlers were put back


def test_a_stop_while_results_json_is_written_leaves_no_results(tmp_path, capsys, monkeypatch):
    run = tmp_path / "results"
    real_replace = os.replace

    def stop_before_rename(src, dst):
        if Path(dst).name == "results.json":  # the text is in results.json.tmp by now
            assert Path(src).read_text().startswith("{")
            os.kill(os.getpid(), signal.SIGINT)  # in the final evaluation: stops at once
        return real_replace(src, dst)
    monkeypatch.setattr(atomic.os, "replace", stop_before_rename)
    assert cli.main(["train", str(digits_config(tmp_path)), "--run-dir", str(run)]) == 130
    assert "interrupted during the final evaluation" in capsys.readouterr().err
    assert not (run / "results.json").exists() and not (run / "results.json.tmp").exists()
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert cli.main(["train", "--resume", str(run)]) == 0 and (run / "results.json").exists()


def test_a_stop_request_is_not_taken_for_a_damaged_checkpoint(finished, tmp_path, capsys, monkeypatch):
    # the handler's exception passes through code that catches Exception (read_checkpoint here)
    run = copy_run(finished, tmp_path / "reading")
    (run / "results.json").unlink()  # to be evaluated again, from best.pt
    real_load = torch.load

    def stop_while_reading_best(path, *args, **kwargs):
        if Path(path).name == "best.pt":
            os.kill(os.getpid(), signal.SIGINT)
        return real_load(path, *args, **kwargs)
    monkeypatch.setattr(torch, "load", stop_while_reading_best)
    assert cli.main(["train", "--resume", str(run)]) == 130
    err = capsys.readouterr().err
    assert "interrupted during the final evaluation" in err and "not a readable checkpoint" not in err


def test_conflicting_train_options_are_named(finished, tmp_path, capsys):
    cfg = str(digits_config(tmp_path))
    assert cli.main(["train", cfg, "--resume", str(finished)]) == 2
    assert "--resume continues the run with its saved config; give no CONFIG" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(finished), "--run-dir", str(tmp_path / "x")]) == 2
    assert "--run-dir does not go with it" in capsys.readouterr().err
    # overrides after an option are overrides, in command-line order
    assert cli.main(["train", cfg, "--run-dir", str(tmp_path / "after"), "optim.epochs=1", "seed=3"]) == 0
    saved = yaml.safe_load((tmp_path / "after" / "config.yaml").read_text())
    assert saved["optim"]["epochs"] == 1 and saved["seed"] == 3
    with pytest.raises(SystemExit):
        cli.main(["train", cfg, "--run-dir", str(tmp_path / "y"), "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_eval_of_a_checkpoint_moved_out_of_its_run_folder_uses_the_config_inside(finished, tmp_path, capsys):
    moved = tmp_path / "elsewhere.pt"
    moved.write_bytes((finished / "best.pt").read_bytes())
    assert cli.main(["eval", str(moved)]) == 0
    again = json.loads((tmp_path / "eval-elsewhere.json").read_text())["checkpoints"]["elsewhere"]
    original = json.loads((finished / "results.json").read_text())["checkpoints"]["best_val"]
    assert again["raw"]["top1"] == pytest.approx(original["raw"]["top1"])
    capsys.readouterr()
    # an override that builds another model is an error naming the checkpoint, not a traceback
    assert cli.main(["eval", str(finished), "model.name=resnet32"]) == 2
    err = capsys.readouterr().err
    assert f"the weights in {finished / 'best.pt'} do not fit the model" in err and "Traceback" not in err


def test_shipped_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    want = cli.CONFIG_DIR / "cifar100_lt_if100_ce.yaml"
    for name in ("configs/cifar100_lt_if100_ce.yaml", "cifar100_lt_if100_ce", "cifar100_lt_if100_ce.yaml"):
        assert cli.resolve_config_path(name) == want
    # a mistyped path into another folder is an error, not the shipped config of that file name
    with pytest.raises(FileNotFoundError, match="config 'my_experiments/cifar100_lt_if100_ce.yaml' not found"):
        cli.resolve_config_path("my_experiments/cifar100_lt_if100_ce.yaml")
    with pytest.raises(FileNotFoundError, match="config 'no_such_config' not found .* Known configs: "):
        cli.resolve_config_path("no_such_config")
    # its data comes from data.root or LONGTAIL_DATA: unset, the error says where it looked and how to set it
    monkeypatch.delenv("LONGTAIL_DATA", raising=False)
    assert cli.main(["train", "cifar100_lt_if100_ce"]) == 2
    err = capsys.readouterr().err
    assert f"Set data.root (or the environment variable LONGTAIL_DATA) to the folder that holds the data (now " \
           f"{tmp_path / 'data'}, the default ./data)" in err
    assert not (tmp_path / "runs").exists()


def test_mistakes_on_the_command_line_are_one_line_errors(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert cli.main(["demo", "--out", str(afile)]) == 2
    assert f"--out {afile} is a file" in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["train", "no_such_config"]) == 2
    assert "error: config 'no_such_config' not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["data"])
    assert "required: {check,info}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["data", "check", "list.txt", "--root", str(tmp_path), "--num-classes", "0"])
    assert "--num-classes: must be >= 1" in capsys.readouterr().err
