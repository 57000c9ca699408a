"""The command line on a user's own list of images (DataLoader path), eval, data check, and torchrun."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from longtail import cli, evaluation
from longtail.config import load_config
from longtail.data import load_benchmark
from longtail.rundir import resume_config

pytestmark = pytest.mark.slow
COUNTS = {"train": [24, 10, 4], "val": [3, 3, 3], "test": [5, 5, 5]}


@pytest.fixture(scope="module")
def image_lists(tmp_path_factory):
    """A tiny long-tailed dataset of real PNG/JPEG files in folders, with the three list files."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, counts in COUNTS.items():
        lines = []
        for label, n in enumerate(counts):
            for i in range(n):
                # class-dependent colour so a model can learn something
                img = np.clip(rng.normal(60 + 70 * label, 25, (20, 24, 3)), 0, 255).astype(np.uint8)
                rel = Path(split) / f"c{label}" / f"{i}.{'png' if i % 2 else 'jpg'}"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / rel)
                lines.append(f"{rel} {label}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _overrides(root, out, name, *extra):
    return [f"data.root={root}", f"data.train_list={root / 'train.txt'}", f"data.val_list={root / 'val.txt'}",
            f"data.test_list={root / 'test.txt'}", "data.image_size=16", "data.resize=20", "data.augment=imagenet",
            "data.workers=1", "model.name=convnet", "optim.epochs=2", "optim.batch_size=8", "optim.warmup_epochs=0",
            "optim.lr=0.05", "eval.batch_size=16", "progress=quiet", "threads=1", f"out_dir={out}",
            f"run_name={name}", *extra]


def test_train_and_eval_on_your_own_image_list(image_lists, tmp_path, capsys, monkeypatch):
    base = Path(__file__).resolve().parents[1] / "configs" / "cifar100_lt_if100_ce.yaml"
    assert cli.main(["train", str(base), "data.name=lists", "loss.name=ce", *_overrides(image_lists, tmp_path, "own")]) == 0
    run = tmp_path / "own"
    results = json.loads((run / "results.json").read_text())
    assert results["checkpoints"]["last"]["raw"]["num_samples"] == sum(COUNTS["test"])
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # 38 training images, batch 8, last partial batch dropped: 4 steps of 8 per epoch
    assert [r["epoch"] for r in log] == [1, 2]
    capsys.readouterr()

    # eval re-creates the same figures from the checkpoint, and takes a PR tau; with precision auto
    # it evaluates in the precision the run trained in, even where auto now means the other one
    trained_in = json.loads((run / "environment.json").read_text())["precision"]
    assert load_config(run / "config.yaml").precision == "auto" and trained_in in ("fp32", "bf16")
    monkeypatch.setattr(evaluation, "_cpu_bf16_is_fast", lambda: trained_in == "fp32")
    real_predict, used = evaluation.predict, set()

    def predict_recording(model, split, transform, device, precision, *args):
        used.add(precision)
        return real_predict(model, split, transform, device, precision, *args)
    monkeypatch.setattr(evaluation, "predict", predict_recording)
    assert cli.main(["eval", str(run), "--pr-tau", "0.5"]) == 0
    assert used == {trained_in}
    out = capsys.readouterr().out
    again = json.loads((run / "eval-best.json").read_text())["checkpoints"]["best"]
    assert again["pr_transductive"]["tau"] == 0.5 and "| best | raw |" in out
    # the same numbers exactly: one evaluation, with the run's numerics (precision, memory format)
    final = results["checkpoints"]["best_val"]
    for variant in ("raw", "pr", "la"):
        assert again[variant] == final[variant], variant


def test_a_list_run_trains_with_the_released_gala_recipe(image_lists, tmp_path):
    from longtail import train as train_mod

    base = Path(__file__).resolve().parents[1] / "configs" / "cifar100_lt_if100_ce.yaml"
    args = ["data.name=lists", "loss.name=ce", *_overrides(image_lists, tmp_path, "ra"), "data.augment=imagenet_randaugment"]
    train_set = load_benchmark(load_config(base, args).data).train
    assert train_set.crops_on_load and train_set.pad == 4  # reflect-padded, then cropped, as each is decoded
    plain = load_benchmark(load_config(base, args[:-1]).data).train
    assert plain.crops_on_load and plain.pad == 0  # the plain recipe does not pad
    small = load_benchmark(load_config(base, [*args, "data.augment=crop_flip"]).data)
    assert not small.train.crops_on_load and not small.augment.cropped  # decoded like evaluation, cropped on the device
    run = train_mod.train(load_config(base, [*args, "optim.epochs=1"]))
    assert json.loads((run / "results.json").read_text())["checkpoints"]["last"]["raw"]["num_samples"] == sum(COUNTS["test"])


def test_list_run_resumed_mid_epoch_crops_and_trains_as_the_uninterrupted_one(image_lists, tmp_path, monkeypatch):
    # the "imagenet" random resized crop is taken as each image is decoded, keyed by where it is
    # trained: a resumed run must crop the rest of the epoch as the uninterrupted run did
    from longtail import train as train_mod

    base = Path(__file__).resolve().parents[1] / "configs" / "cifar100_lt_if100_ce.yaml"

    def cfg(name):
        # check_every=1: the stop request is seen after the very step it came in (a GPU's default waits longer)
        return load_config(base, ["data.name=lists", "loss.name=ce", "precision=fp32", "check_every=1",
                                  *_overrides(image_lists, tmp_path, name)])

    whole = train_mod.train(cfg("whole"))
    real_autocast, calls = train_mod.autocast_context, {"n": 0}

    def interrupting(device, precision):
        calls["n"] += 1
        if calls["n"] == 6:  # in epoch 2 (of 4 steps): the handler checkpoints after this step
            os.kill(os.getpid(), signal.SIGINT)
        return real_autocast(device, precision)
    monkeypatch.setattr(train_mod, "autocast_context", interrupting)
    with pytest.raises(train_mod.TrainingInterrupted):
        train_mod.train(cfg("cut"))
    monkeypatch.setattr(train_mod, "autocast_context", real_autocast)
    state = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["state"]
    assert state["epoch"] == 1 and 0 < state["step"] < 4  # stopped mid epoch 2
    train_mod.train(resume_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
    a = torch.load(whole / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_eval_of_a_missing_checkpoint_says_so(tmp_path, capsys):
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "error: no checkpoint at" in capsys.readouterr().err


def test_data_check_reports_missing_and_corrupt_files(image_lists, tmp_path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(image_lists, root)
    (root / "train" / "c0" / "0.jpg").unlink()
    broken = root / "train" / "c0" / "2.jpg"
    broken.write_bytes(broken.read_bytes()[:60])  # a truncated JPEG
    with open(root / "train.txt", "a") as f:
        f.write("train/c9/x.png 7\n")
    code = cli.main(["data", "check", str(root / "train.txt"), "--root", str(root), "--num-classes", "3"])
    out = capsys.readouterr().out
    assert code == 1
    assert "missing files: 1" in out and "train/c0/0.jpg" in out
    assert "train/c0/2.jpg" in out and "label 7 must be in [0, 3)" in out
    assert cli.main(["data", "check", str(image_lists / "train.txt"), "--root", str(image_lists)]) == 0


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc), children before grandchildren."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        kids = [c for c, p in parent.items() if p == todo[0]]
        found += kids
        todo = todo[1:] + kids
    return found


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal_all(pid: int, sig: int) -> list[int]:
    """Send sig to pid and every process below it, the ranks before torchrun (which would stop them)."""
    pids = [*_descendants(pid), pid]
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:  # exited meanwhile
            pass
    return pids


def _run_showing_stacks_on_hang(cmd, timeout):
    """Run cmd and return (exit code, its output). If it is still running after `timeout` seconds,
    every process it started (torchrun, the ranks, their DataLoader workers) prints its Python stack
    through faulthandler on SIGABRT, and the test fails with those stacks: a hang says where it was.
    The output goes to a file, not a pipe: a process that outlives torchrun (a worker server started
    after the signals) must not keep the test waiting for the end of a pipe."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            signalled = _signal_all(proc.pid, signal.SIGABRT)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(map(_running, signalled[:-1])):
                time.sleep(0.2)  # the ranks are writing their stacks
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_all(proc.pid, signal.SIGKILL)
                proc.wait()
            out.seek(0)
            pytest.fail(f"{cmd[:6]}... still running after {timeout} s; the stacks of its processes:\n"
                        f"{out.read()[-20000:]}")
        out.seek(0)
        return code, out.read()


def test_torchrun_two_processes_end_to_end(image_lists, tmp_path):
    base = Path(__file__).resolve().parents[1] / "configs" / "cifar100_lt_if100_gala_reference.yaml"
    # --standalone: torchrun binds a free rendezvous port itself (no window for another process to take it)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "longtail", "train", str(base), "data.name=lists",
           *_overrides(image_lists, tmp_path, "ddp")]
    code, err = _run_showing_stacks_on_hang(cmd, timeout=300)
    assert code == 0, err[-3000:]
    run = tmp_path / "ddp"
    results = json.loads((run / "results.json").read_text())
    assert results["checkpoints"]["last"]["raw"]["num_samples"] == sum(COUNTS["test"])
    assert json.loads((run / "environment.json").read_text())["world_size"] == 2
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["loss"]["theta"].sum() > 0 and len(ck["rng"]) == 2 and ck["world_size"] == 2
