"""A new user's first day: resuming from another folder, eval reproducing a run, clear one-line
errors from DataLoader workers and list files, and what a run prints."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_run_safety import digits_config

from longtail import cli
from longtail import train as train_mod
from longtail.config import config_from_dict

pytestmark = pytest.mark.xdist_group("hardening")


def write_images(root: Path, counts=(12, 6, 3), size=(14, 18)) -> Path:
    """PNG images in class folders, with train/val/test lists of `relative/path label` lines."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", counts), ("val", (2, 2, 2)), ("test", (2, 2, 2))):
        lines = []
        for label, n in enumerate(per_class):
            for i in range(n):
                rel = f"{split}/c{label}/{i}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.clip(rng.normal(50 + 70 * label, 30, (*size, 3)), 0, 255).astype(np.uint8)).save(
                    root / rel)
                lines.append(f"{rel} {label}\n")
        (root / f"{split}.txt").write_text("".join(lines))
    return root


def list_config(data_root: str, lists: Path, out: Path, name: str, **changes) -> dict:
    data = {"data": {"name": "lists", "root": data_root, "train_list": str(lists / "train.txt"),
                     "val_list": str(lists / "val.txt"), "test_list": str(lists / "test.txt"), "image_size": 8,
                     "resize": 10, "augment": "crop_flip", "workers": 0},
            "model": {"name": "convnet"}, "loss": {"name": "ce"},
            "optim": {"epochs": 2, "batch_size": 8, "lr": 0.05, "warmup_epochs": 1},
            "precision": "fp32", "channels_last": False, "progress": "quiet", "threads": 1,
            "out_dir": str(out), "run_name": name}
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        data[section][key] = value
    return data


def test_a_run_resumes_from_any_folder_and_from_a_copy_of_its_data(tmp_path, monkeypatch, capsys):
    images = write_images(tmp_path / "images")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    cfg = tmp_path / "run.yaml"
    # root and lists relative to the folder it starts from
    cfg.write_text(yaml.safe_dump(list_config("../images", Path("../images"), tmp_path, "run")))
    assert cli.main(["train", str(cfg)]) == 0
    run = tmp_path / "run"
    recorded = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert recorded["root"] == str(images) and recorded["train_list"] == str(images / "train.txt")  # absolute
    finished = json.loads((run / "results.json").read_text())

    def unfinished():  # as if stopped during the final evaluation: resume loads the data again
        (run / "results.json").unlink()

    unfinished()
    monkeypatch.chdir(tmp_path / "b")  # where ../images does not exist
    assert cli.main(["train", "--resume", str(run)]) == 0
    again = json.loads((run / "results.json").read_text())
    assert again["checkpoints"] == finished["checkpoints"]
    # the same data in another folder is accepted
    shutil.copytree(images, tmp_path / "copy")
    unfinished()
    assert cli.main(["train", "--resume", str(run), f"data.root={tmp_path / 'copy'}"]) == 0
    # other data is refused, naming both folders, and nothing is lost
    shutil.copytree(images, tmp_path / "other")
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(tmp_path / "other" / "train" / "c0" / "0.png")
    unfinished()
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(run), f"data.root={tmp_path / 'other'}"]) == 2
    err = capsys.readouterr().err
    # the root it last ran from, the copy: a resume records the folder it was given
    assert f"the data at data.root={tmp_path / 'other'} is not the data {run} trained on (data.root={tmp_path / 'copy'})" \
        in err
    assert (run / "last.pt").exists() and not (run / "results.json").exists()


def test_weights_and_lists_named_by_a_relative_path_are_recorded_absolute(tmp_path, monkeypatch):
    from longtail.config import resolve

    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.pth").write_bytes(b"")
    cfg = resolve(config_from_dict({"data": {"name": "cifar100-lt"}, "model": {"name": "resnet32", "pretrained": "w.pth"}}))
    assert cfg.model.pretrained == str(tmp_path / "w.pth")
    assert cfg.data.root == str(tmp_path / "data")  # CIFAR's default root
    missing = resolve(config_from_dict({"model": {"name": "resnet32", "init_from": "missing/run"}}))
    assert missing.model.init_from == "missing/run"  # not found: left as given, for the error that names it


def test_eval_reproduces_a_bf16_channels_last_run_exactly(tmp_path, capsys):
    cfg = digits_config(tmp_path)
    data = yaml.safe_load(cfg.read_text())
    data.update(precision="bf16", channels_last=True)
    cfg.write_text(yaml.safe_dump(data))
    assert cli.main(["train", str(cfg), "--run-dir", str(tmp_path / "run")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    final = results["checkpoints"]["best_val"]
    assert cli.main(["eval", str(tmp_path / "run")]) == 0
    evaluated = json.loads((tmp_path / "run" / "eval-best.json").read_text())
    again = evaluated["checkpoints"]["best"]
    for variant in ("raw", "pr", "la", "pr_transductive"):
        assert again[variant] == final[variant], variant
    assert evaluated["validation"] == results["validation"]  # by shot group, as the run stored them


def test_a_bad_image_in_a_worker_is_the_same_one_line_error(tmp_path, capsys):
    images = write_images(tmp_path / "images")
    bad = images / "train" / "c1" / "2.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    for workers in (0, 1):
        cfg = tmp_path / f"w{workers}.yaml"
        cfg.write_text(yaml.safe_dump(list_config(str(images), images, tmp_path, f"w{workers}", data__workers=workers)))
        capsys.readouterr()
        assert cli.main(["train", str(cfg)]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith(f"error: cannot decode {bad} (listed in {images / 'train.txt'})"), err


def test_a_missing_last_pt_points_to_best_pt(tmp_path, capsys):
    assert cli.main(["train", str(digits_config(tmp_path)), "--run-dir", str(tmp_path / "run")]) == 0
    run = tmp_path / "run"
    (run / "results.json").unlink()
    (run / "last.pt").unlink()
    assert cli.main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run} has no last.pt checkpoint to resume from; its best.pt is a whole checkpoint too" in err
    assert "copy it to last.pt to resume from that epoch" in err


def test_off_a_terminal_each_epoch_is_one_readable_line(tmp_path, capsys, monkeypatch):
    data = yaml.safe_load(digits_config(tmp_path).read_text())
    data.update(progress="auto", out_dir=str(tmp_path), run_name="log")  # the default
    monkeypatch.setattr("sys.stderr.isatty", lambda: False)  # a log file, a pipe, a batch job
    train_mod.train(config_from_dict(data))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    log = [json.loads(line) for line in (tmp_path / "log" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == len(log) == 2
    for line, r in zip(lines, log):
        assert line == (f"epoch {r['epoch']}/2  loss {r['loss']:.4f}  train {r['train_acc']:.1f}%  val {r['val_acc']:.1f}%  "
                        f"{r['images_per_s']:.0f} img/s  {r['time_s']:.1f} s")


def test_after_a_resume_the_progress_rate_counts_only_this_process(tmp_path, monkeypatch, capsys):
    data = yaml.safe_load(digits_config(tmp_path).read_text())
    data.update(check_every=1, out_dir=str(tmp_path), run_name="cut")
    calls = {"n": 0}
    real_step = train_mod.train_step

    def stop_after_step_one(state, *args, **kwargs):  # an epoch: 11 steps of 32 (383 images)
        calls["n"] += 1
        if calls["n"] == 1:
            os.kill(os.getpid(), 2)
        return real_step(state, *args, **kwargs)
    monkeypatch.setattr(train_mod, "train_step", stop_after_step_one)
    with pytest.raises(train_mod.TrainingInterrupted):
        train_mod.train(config_from_dict(data))
    monkeypatch.setattr(train_mod, "train_step", real_step)
    # as if the stopped process had trained that epoch's first steps very slowly (or paused for long)
    ckpt = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    ckpt["rng"][0]["epoch_so_far"]["time_s"] = 1e6
    torch.save(ckpt, tmp_path / "cut" / "last.pt")
    capsys.readouterr()
    from longtail.rundir import resume_config

    train_mod.train(resume_config(tmp_path / "cut", ["progress=bar"]), tmp_path / "cut", resume=True)
    shown = [part for part in capsys.readouterr().err.split("\r") if part.startswith("epoch 1/2 step")]
    rates = [float(part.split(" img/s")[0].rsplit(" ", 1)[1]) for part in shown]
    # this process's own speed, not the stopped one's time: the old figure was under 0.01 images/s here
    assert rates and min(rates) > 10, shown
    log = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["time_s"] > 1e6  # the epoch's own record keeps the whole epoch, as an uninterrupted run's


def test_gcl_on_image_files_resumes_to_the_same_weights(tmp_path, monkeypatch):
    # GCL's noise comes from torch's global generator; a DataLoader starting to iterate must not draw
    # from it, or the resumed run (which starts its loaders again) draws once more than the whole run
    from test_train import _same_model, _train_stopped_in_step, weights

    images = write_images(tmp_path / "images")

    def cfg(name):
        return config_from_dict(list_config(str(images), images, tmp_path, name, loss__name="gcl",
                                            optim__epochs=3, optim__batch_size=4, data__augment="imagenet"))
    whole = train_mod.train(cfg("whole"))
    _train_stopped_in_step(monkeypatch, cfg("cut"), 7, "epoch 2 step 2")  # 5 steps an epoch
    from longtail.rundir import resume_config

    run = train_mod.train(resume_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
    assert _same_model(weights(whole), weights(run))


def test_a_new_run_discards_what_a_killed_one_left_and_tests_without_validation(tmp_path, capsys):
    # a run killed after its first best.pt and before its first last.pt left a folder a new run may use
    first = tmp_path / "first"
    assert cli.main(["train", str(digits_config(tmp_path)), "--run-dir", str(first)]) == 0
    run = tmp_path / "reused"
    run.mkdir()
    (run / "best.pt").write_bytes((first / "best.pt").read_bytes())
    (run / "eval-best.json").write_text("{}")
    data = yaml.safe_load(digits_config(tmp_path).read_text())
    data["data"]["val_per_class"] = 0  # no validation this time: nothing is selected
    (tmp_path / "noval.yaml").write_text(yaml.safe_dump(data))
    assert cli.main(["train", str(tmp_path / "noval.yaml"), "--run-dir", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert list(results["checkpoints"]) == ["last"] and not (run / "best.pt").exists()
    assert not (run / "eval-best.json").exists()
    # the best-on-test figure does not need a validation split
    assert results["best_test_epoch"]["epoch"] in (1, 2)


def test_a_resume_records_its_runtime_overrides_for_eval(tmp_path):
    images = write_images(tmp_path / "images")
    cfg = config_from_dict(list_config(str(images), images, tmp_path, "run"))
    run = train_mod.train(cfg)
    (run / "results.json").unlink()
    shutil.copytree(images, tmp_path / "copy")
    from longtail.rundir import resume_config

    train_mod.train(resume_config(run, [f"data.root={tmp_path / 'copy'}", "eval.batch_size=7"]), run, resume=True)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["root"] == str(tmp_path / "copy") and saved["eval"]["batch_size"] == 7


def test_a_run_saved_by_another_version_is_named_with_the_version_that_made_it(tmp_path, capsys):
    run = tmp_path / "old"
    run.mkdir()
    saved = yaml.safe_load(digits_config(tmp_path).read_text())
    saved["data"]["autoaugment_shear"] = "nearest"  # a key an earlier version had
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    (run / "environment.json").write_text(json.dumps({"longtail": "0.0.9"}))
    torch.save({"model": {"w": torch.zeros(1)}}, run / "last.pt")
    for argv in (["eval", str(run)], ["train", "--resume", str(run)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"error: {run / 'config.yaml'} does not load in this version of")
        assert "the run was made with 0.0.9" in err and "unknown key 'data.autoaugment_shear'" in err
    # a new run records the version that made it
    assert cli.main(["train", str(digits_config(tmp_path)), "optim.epochs=1", "--run-dir", str(tmp_path / "new")]) == 0
    from longtail import __version__
    assert json.loads((tmp_path / "new" / "environment.json").read_text())["longtail"] == __version__
