"""End to end on the real CIFAR-100: train, artefacts, resume after a kill, bad input, report."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from longtail import cli, rundir
from longtail import train as train_mod
from longtail.config import load_config
from longtail.data import loader as loader_mod
from longtail.rundir import resume_config
from longtail.train import TrainingDiverged, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
pytestmark = pytest.mark.slow


def tiny(shared_data, tmp_path, name, *extra):
    """A few hundred real CIFAR-100-LT images (4 per class), GALA reference, a couple of epochs."""
    return load_config(CONFIGS / "cifar100_lt_if100_gala_reference.yaml", [
        f"data.root={shared_data}", "data.limit_per_class=4", "data.limit_eval_per_class=2",
        "optim.epochs=3", "optim.batch_size=32", "optim.warmup_epochs=1", f"out_dir={tmp_path}",
        f"run_name={name}", "progress=quiet", "threads=1", "eval.batch_size=256", *extra])


def weights(run_dir, name="last.pt"):
    return torch.load(Path(run_dir) / name, map_location="cpu", weights_only=True)


def test_train_writes_every_artefact_and_report_renders(shared_data, tmp_path, capsys):
    run = train(tiny(shared_data, tmp_path, "full"))
    for f in ("config.yaml", "environment.json", "metrics.jsonl", "last.pt", "best.pt", "results.json",
              "results.md", "per_class.png"):
        assert (run / f).is_file() and (run / f).stat().st_size > 0, f
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert {"loss", "lr", "train_acc", "val_acc", "time_s", "images_per_s"} <= set(log[0])
    results = json.loads((run / "results.json").read_text())
    assert results["method"] == "gala-reference"
    # the heading names the setting: method, dataset, imbalance factor and seed
    assert (run / "results.md").read_text().splitlines()[0] == "# gala-reference on cifar100-lt IF100 (seed 0)"
    best = results["checkpoints"]["best_val"]
    assert set(best) == {"raw", "pr", "la", "pr_transductive"}
    assert best["raw"]["num_samples"] == 200  # 2 test images per class
    assert best["pr"]["tau"] in load_config(run / "config.yaml").eval.tau_grid
    assert results["best_test_epoch"]["epoch"] in (1, 2, 3)
    # the best-on-val checkpoint is the epoch with the highest logged validation accuracy
    accs = [r["val_acc"] for r in log]
    assert results["best_val"]["epoch"] == 1 + accs.index(max(accs))
    ck = weights(run)
    assert ck["loss"]["theta"].abs().sum() > 0  # GALA's statistics travel with the checkpoint
    # where it was made: the precision it trained in and the machine (no resume moved it)
    from longtail.evaluation import resolve_precision
    env = json.loads((run / "environment.json").read_text())
    assert results["environment"] == {"precision": resolve_precision("auto", torch.device("cpu")), "started": env}

    capsys.readouterr()
    assert cli.main(["report", str(run), "--out", str(tmp_path / "table.md")]) == 0
    out = capsys.readouterr().out
    assert "| cifar100-lt IF100 | gala-reference | resnet32 | 1 |" in out
    assert (tmp_path / "table.md").read_text() == out.split("written:")[0].rstrip("\n") + "\n"


def _launch(cfg_overrides, shared_data, tmp_path, name):
    args = [sys.executable, "-m", "longtail", "train", str(CONFIGS / "cifar100_lt_if100_gala_reference.yaml"),
            f"data.root={shared_data}", "data.limit_per_class=8", "data.limit_eval_per_class=1",
            "optim.epochs=4", "optim.batch_size=32", "optim.warmup_epochs=1", f"out_dir={tmp_path}",
            f"run_name={name}", "progress=quiet", "threads=1", "eval.track_test=false", *cfg_overrides]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def uninterrupted(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    reference = _launch([], shared_data, out, "reference")
    assert reference.wait(timeout=600) == 0, reference.stderr.read()
    return out / "reference"


@pytest.mark.xdist_group("uninterrupted")  # one pytest-xdist worker trains the shared fixture once
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_resume_after_kill_gives_identical_weights(shared_data, tmp_path, sig, uninterrupted):

    proc = _launch([], shared_data, tmp_path, "killed")
    log = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 240
    first_checkpoint = tmp_path / "killed" / "last.pt"
    while time.time() < deadline and not (first_checkpoint.exists() and log.read_text().count("\n") >= 1):
        time.sleep(0.05)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    if sig == signal.SIGINT:
        assert code == 130, proc.stderr.read()
        assert "--resume" in proc.stderr.read()
    else:
        assert code == -signal.SIGKILL
    assert len(log.read_text().splitlines()) < 4, "the run finished before it was interrupted"

    refused = subprocess.run([sys.executable, "-m", "longtail", "train", "--resume", str(tmp_path / "killed"),
                              "optim.lr=0.5"], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "optim.lr cannot change on --resume" in refused.stderr
    resumed = subprocess.run([sys.executable, "-m", "longtail", "train", "--resume", str(tmp_path / "killed"),
                              "progress=log"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(uninterrupted), weights(tmp_path / "killed")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["loss"]:
        assert torch.equal(a["loss"][key], b["loss"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    epochs = [json.loads(line)["epoch"] for line in log.read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


@pytest.mark.parametrize("check_every, bad_call, where", [
    (0, 16, "epoch 2, step 4"),  # auto = every step on CPU: step 4 of epoch 2 (12 steps/epoch)
    (5, 16, "epoch 2, one of steps 1-5"),  # the GPU-style deferred check, at step 5
    (5, 24, "epoch 2, one of steps 11-12"),  # the last step: caught before the epoch's checkpoint
])
def test_nan_loss_stops_and_keeps_last_good_checkpoint(shared_data, tmp_path, monkeypatch, check_every, bad_call,
                                                       where):
    real_build = train_mod.losses.build
    calls = {"n": 0}

    def build_poisoned(name, **kw):
        loss = real_build(name, **kw)
        compute = loss.compute

        def poisoned(logits, target):
            calls["n"] += 1
            value = compute(logits, target)
            return value * float("nan") if calls["n"] == bad_call else value
        loss.compute = poisoned
        return loss

    monkeypatch.setattr(train_mod.losses, "build", build_poisoned)
    cfg = tiny(shared_data, tmp_path, "nan", f"check_every={check_every}")
    with pytest.raises(TrainingDiverged) as err:
        train(cfg)
    msg = str(err.value)
    assert where in msg and "last good checkpoint" in msg and "end of epoch 1" in msg
    ck = weights(tmp_path / "nan")
    assert ck["state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_checking_every_few_steps_changes_only_how_often_the_loop_reads_back(shared_data, tmp_path, monkeypatch):
    # On a GPU the loop checks the loss and the stop flag every 25 steps, not every step: each check
    # waits for the device. The weights must not depend on it; only the number of checks does.
    flags = []
    real_any_rank = train_mod.distributed.any_rank

    def counting(flag, device):
        flags.append(flag)
        return real_any_rank(flag, device)
    monkeypatch.setattr(train_mod.distributed, "any_rank", counting)
    runs = {}
    for every in (1, 5):
        flags.clear()
        runs[every] = train(tiny(shared_data, tmp_path, f"every{every}", "optim.epochs=1", f"check_every={every}"))
        # 12 steps: a loss check and a stop check at each checked step (every step / steps 5, 10, 12),
        # and one stop check before the final evaluation
        assert len(flags) == 2 * (12 if every == 1 else 3) + 1 and not any(flags)
    a, b = weights(runs[1]), weights(runs[5])
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


@pytest.mark.parametrize("mode, expected", [("default", None), ("reduce-overhead", "reduce-overhead")])
def test_compile_wraps_the_training_network_in_the_chosen_mode(shared_data, tmp_path, monkeypatch, mode, expected):
    seen = []

    def fake_compile(net, mode=None):
        seen.append((type(net).__name__, mode))
        return net  # compiling for real takes ~30 s on this CPU; the CPU reproduction runs use it
    monkeypatch.setattr(train_mod.torch, "compile", fake_compile)
    train(tiny(shared_data, tmp_path, f"compile-{mode}", "optim.epochs=1", "compile=true", f"compile_mode={mode}"))
    assert seen == [("Classifier", expected)]


def test_missing_dataset_and_bad_override_fail_clearly(tmp_path, capsys):
    code = cli.main(["train", str(CONFIGS / "cifar100_lt_if100_ce.yaml"), f"data.root={tmp_path / 'nowhere'}",
                     f"out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "cifar-100-python" in err and "data.root" in err
    assert cli.main(["train", str(CONFIGS / "cifar100_lt_if100_ce.yaml"), "optim.momentum=high"]) == 2
    assert "optim.momentum must be a number" in capsys.readouterr().err
    assert not any(tmp_path.glob("*/last.pt"))


def test_tensorboard_logging_or_a_clear_message(tmp_path):
    from longtail.config import config_from_dict

    cfg = config_from_dict({"data": {"name": "digits-lt", "image_size": 8, "augment": "none", "val_per_class": 10},
                            "model": {"name": "mlp"}, "optim": {"epochs": 1, "batch_size": 64},
                            "precision": "fp32", "channels_last": False, "progress": "quiet", "threads": 1,
                            "out_dir": str(tmp_path), "run_name": "tb", "tensorboard": True})
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:  # the optional extra is not installed: say how to get it, write nothing
        with pytest.raises(ImportError, match=r"pip install 'longtail\[tensorboard\]'"):
            train(cfg)
        assert not (tmp_path / "tb").exists()
    else:
        run = train(cfg)
        assert any((run / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_keeps_the_precision_the_run_started_with(shared_data, tmp_path, monkeypatch):
    # precision "auto" depends on the CPU: start where it means fp32, resume where it means bf16
    # (another machine); the resumed part must still train and evaluate in fp32.
    from longtail import evaluation
    real_autocast, real_predict = train_mod.autocast_context, train_mod.predict
    used = []

    class ControlSawItsPrecision(Exception):
        pass

    def autocast_recording(device, precision):
        used.append(("train", precision))
        if len(used) == 3 and phase == "start":
            os.kill(os.getpid(), signal.SIGTERM)  # the handler checkpoints after this step
        if phase == "control":
            # the first step's precision is all the control needs; training on in bf16 would take
            # minutes on a CPU without native bf16, where this test's "bf16 machine" is only pretended
            raise ControlSawItsPrecision
        return real_autocast(device, precision)

    def predict_recording(model, split, transform, device, precision, *args):
        used.append(("eval", precision))
        return real_predict(model, split, transform, device, precision, *args)

    monkeypatch.setattr(train_mod, "autocast_context", autocast_recording)
    monkeypatch.setattr(train_mod, "predict", predict_recording)
    monkeypatch.setattr(evaluation, "predict", predict_recording)
    cfg = tiny(shared_data, tmp_path, "pinned", "optim.epochs=2", "precision=auto")

    phase = "start"
    monkeypatch.setattr(evaluation, "_cpu_bf16_is_fast", lambda: False)
    with pytest.raises(train_mod.TrainingInterrupted):
        train(cfg)
    assert set(used) == {("train", "fp32")}
    assert json.loads((tmp_path / "pinned" / "environment.json").read_text())["precision"] == "fp32"

    phase, used[:] = "resume", []
    monkeypatch.setattr(evaluation, "_cpu_bf16_is_fast", lambda: True)
    run = train(resume_config(tmp_path / "pinned"), tmp_path / "pinned", resume=True)
    assert {p for _, p in used} == {"fp32"} and {kind for kind, _ in used} == {"train", "eval"}
    assert json.loads((run / "results.json").read_text())["config"]["precision"] == "auto"

    # control: a new run on the "bf16 machine" does train in bf16, so the recording would see it
    phase, used[:] = "control", []
    with pytest.raises(ControlSawItsPrecision):
        train(tiny(shared_data, tmp_path, "fresh", "optim.epochs=1", "precision=auto"))
    assert used == [("train", "bf16")]


def stage_two(shared_data, tmp_path, name, first, *extra):
    """GCL's second stage on a few real CIFAR-100-LT images, from the first-stage run `first`."""
    # 12 images per class where there are as many: the tail keeps 5 to 11, so the counts (GCL's noise
    # scale) and class-balanced draws differ from the uniform case
    return load_config(CONFIGS / "cifar100_lt_if100_gcl_stage2.yaml", [
        f"data.root={shared_data}", "data.limit_per_class=12", "data.limit_eval_per_class=2", "optim.epochs=3",
        "optim.batch_size=32", f"out_dir={tmp_path}", f"run_name={name}", "progress=quiet", "threads=1",
        "eval.batch_size=256", f"model.init_from={first}", *extra])


@pytest.fixture(scope="module")
def gcl_stage_one(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("gcl")
    runs = []
    for seed in (0, 1):
        cfg = load_config(CONFIGS / "cifar100_lt_if100_gcl.yaml", [
            f"data.root={shared_data}", "data.limit_per_class=4", "data.limit_eval_per_class=2", "optim.epochs=2",
            "optim.batch_size=32", "optim.warmup_epochs=1", f"out_dir={out}", f"run_name=s{seed}",
            "progress=quiet", "threads=1", "eval.batch_size=256", f"seed={seed}"])
        runs.append(train(cfg))
    return runs


@pytest.mark.xdist_group("gcl_stage_one")
def test_classifier_retraining_trains_only_the_head_of_the_loaded_run(shared_data, tmp_path, gcl_stage_one,
                                                                   monkeypatch):
    first = gcl_stage_one[0]
    drawn = []
    real_batches = loader_mod.class_balanced_batches

    def recording(labels, *args):
        drawn.append(labels.clone())
        return real_batches(labels, *args)
    monkeypatch.setattr(loader_mod, "class_balanced_batches", recording)
    monkeypatch.setattr(loader_mod, "epoch_batches", None)  # the instance order must not be used
    run = train(stage_two(shared_data, tmp_path, "stage2", first))
    # every epoch drew from the long-tailed training labels, class-balanced
    counts = torch.bincount(drawn[0], minlength=100)
    assert len(drawn) == 3 and counts.max() == 12 and counts.min() == 5
    before, after = weights(first, "best.pt")["model"], weights(run)
    backbone = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone)
    for key in backbone:  # weights and batch-norm statistics exactly as loaded
        assert torch.equal(before[key], after["model"][key]), key
    assert not torch.equal(before["head.weight"], after["model"]["head.weight"])
    # the optimizer holds the head alone
    assert [len(g["params"]) for g in after["optimizer"]["param_groups"]] == [1]
    results = json.loads((run / "results.json").read_text())
    assert results["method"] == "gcl-crt"
    assert results["first_stage"]["checkpoint"] == str(first / "best.pt")
    assert results["first_stage"]["method"] == "gcl" and results["first_stage"]["seed"] == 0
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # the released schedule: 0.008 * (1 + cos(pi e / E)) / 2, no warm-up
    assert [r["lr"] for r in log] == pytest.approx([0.008 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)])
    # as many draws per epoch as the training set holds images (batch 32, the last partial batch kept)
    assert after["state"]["images_seen"] == 3 * len(drawn[0])


@pytest.mark.xdist_group("gcl_stage_one")
def test_classifier_retraining_resumes_to_the_same_weights(shared_data, tmp_path, gcl_stage_one, monkeypatch):
    first = gcl_stage_one[0]
    reference = train(stage_two(shared_data, tmp_path, "whole", first))
    steps = math.ceil(weights(reference)["state"]["images_seen"] / 3 / 32)  # per epoch, last partial batch kept
    real_mixed_loss = train_mod.mixed_loss
    calls = {"n": 0}

    def interrupting(*args):
        calls["n"] += 1
        if calls["n"] == steps + 4:  # mid epoch 2: the handler checkpoints after this step
            os.kill(os.getpid(), signal.SIGINT)
        return real_mixed_loss(*args)
    monkeypatch.setattr(train_mod, "mixed_loss", interrupting)
    cfg = stage_two(shared_data, tmp_path, "cut", first)
    with pytest.raises(train_mod.TrainingInterrupted):
        train(cfg)
    assert weights(tmp_path / "cut")["state"]["step"] == 4
    train(resume_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
    a, b = weights(reference), weights(tmp_path / "cut")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


@pytest.mark.xdist_group("gcl_stage_one")
def test_classifier_retraining_seeds_group_in_one_row_and_bad_sources_fail_clearly(shared_data, tmp_path,
                                                                                  gcl_stage_one, capsys):
    for seed, first in enumerate(gcl_stage_one):
        train(stage_two(shared_data, tmp_path / "runs", f"s{seed}", first, "optim.epochs=1", f"seed={seed}"))
    # a first stage of another setting (less noise): its second stage is another row
    other_first = train(load_config(CONFIGS / "cifar100_lt_if100_gcl.yaml", [
        f"data.root={shared_data}", "data.limit_per_class=4", "data.limit_eval_per_class=2", "optim.epochs=2",
        "optim.batch_size=32", "optim.warmup_epochs=1", f"out_dir={tmp_path}", "run_name=noise03",
        "progress=quiet", "threads=1", "eval.batch_size=256", "loss.noise_mul=0.3"]))
    train(stage_two(shared_data, tmp_path / "runs", "other", other_first, "optim.epochs=1"))
    capsys.readouterr()
    assert cli.main(["report", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    # each seed starts from its own first-stage run, yet the two are seeds of one setting
    assert "48.7" in out
    # named apart by what differs in their first stages
    assert "| cifar100-lt IF100 | gcl-crt [first_stage.loss.noise_mul=0.3] | resnet32 | 1 |" in out
    # (the shipped gcl config leaves noise_mul at the loss's default, which the label names)
    assert "| cifar100-lt IF100 | gcl-crt [first_stage.loss.noise_mul=0.5] | resnet32 | 2 |" in out

    with pytest.raises(ValueError, match="was trained on another split"):
        train(stage_two(shared_data, tmp_path, "split", gcl_stage_one[0], "data.val_per_class=10"))
    assert not (tmp_path / "split").exists()  # refused before anything was written
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(gcl_stage_one[0] / "best.pt", unfinished / "best.pt")  # training, no results.json yet
    with pytest.raises(ValueError, match="has not finished"):
        train(stage_two(shared_data, tmp_path, "early", unfinished))

    with pytest.raises(FileNotFoundError, match="model.init_from: no checkpoint"):
        train(stage_two(shared_data, tmp_path, "nowhere", tmp_path / "nowhere"))
    from longtail.models import build_model
    other = tmp_path / "other.pt"  # a longtail checkpoint of another network: a linear-head ResNet-32
    torch.save({"model": build_model("resnet32", 100, head="linear").state_dict()}, other)
    with pytest.raises(ValueError, match="do not fit this model"):
        train(stage_two(shared_data, tmp_path, "mismatch", other))
    torch.save({"weights": {}}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a longtail checkpoint"):
        train(stage_two(shared_data, tmp_path, "foreign", tmp_path / "foreign.pt"))
    code = cli.main(["train", str(CONFIGS / "cifar100_lt_if100_gcl_stage2.yaml"), f"data.root={shared_data}",
                     f"out_dir={tmp_path}", "run_name=nofirst"])
    assert code == 2 and "model.init_from=RUN_FOLDER" in capsys.readouterr().err
    assert not (tmp_path / "nofirst").exists()


def _digits(tmp_path, name, device="cpu", loss=None, precision="fp32", **optim):
    from longtail.config import config_from_dict

    return config_from_dict({"device": device,
                             "data": {"name": "digits-lt", "image_size": 8, "augment": "none", "val_per_class": 10},
                             "model": {"name": "mlp"}, "loss": loss or {"name": "gala", "mode": "reference"},
                             "optim": {"epochs": 2, "batch_size": 32, "warmup_epochs": 0, **optim},
                             "precision": precision, "channels_last": False, "progress": "quiet", "threads": 1,
                             # a stop request is seen after the step it came in, on a GPU too (default 25)
                             "check_every": 1, "out_dir": str(tmp_path), "run_name": name, "seed": 1})


def _train_stopped_in_step(monkeypatch, cfg, step: int, where: str) -> None:
    """Train cfg with a Ctrl-C arriving during its `step`-th training step (counted over epochs); the
    handler checkpoints after that step, which `where` names ("epoch E step S")."""
    real_autocast, calls = train_mod.autocast_context, {"n": 0}

    def interrupting(device, precision):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGINT)
        return real_autocast(device, precision)
    monkeypatch.setattr(train_mod, "autocast_context", interrupting)
    with pytest.raises(train_mod.TrainingInterrupted, match=where):
        train(cfg)
    monkeypatch.setattr(train_mod, "autocast_context", real_autocast)


def _same_model(a: dict, b: dict) -> bool:
    """Two checkpoints hold bit-identical model weights."""
    return a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU: resuming there restores CUDA generators"))])
def test_a_run_stopped_mid_epoch_logs_and_counts_that_epoch_as_an_uninterrupted_run(tmp_path, monkeypatch, device):
    # The weights were already proven identical on CPU; the resumed epoch's log line (loss, train
    # accuracy) and the run's images seen must cover the steps before the stop too, not only those after
    # it. On a GPU the checkpoint is read onto the device, and its random generator states with it.
    reference = train(_digits(tmp_path, "whole", device))
    _train_stopped_in_step(monkeypatch, _digits(tmp_path, "cut", device), 3, "epoch 1 step 3")
    run = train(resume_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
    a, b = weights(reference), weights(run)
    assert _same_model(a, b)
    assert b["state"]["images_seen"] == a["state"]["images_seen"] == 2 * 8 * 32  # 8 steps of 32 per epoch

    def logged(r):
        return [{k: v for k, v in json.loads(line).items() if k not in ("time_s", "images_per_s")}
                for line in (r / "metrics.jsonl").read_text().splitlines()]
    assert logged(run) == logged(reference)
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (reference, run))
    assert rb["checkpoints"] == ra["checkpoints"] and rb["best_val"] == ra["best_val"]


@pytest.mark.parametrize("what", ["mixup", "fp16"])
def test_a_mixup_or_fp16_run_stopped_mid_epoch_resumes_to_the_same_weights(tmp_path, monkeypatch, what):
    # mixup: the trainer draws an epoch's pairs at its start (one copy to the device), from the step a
    # resumed epoch starts at, so the resumed run must mix its remaining steps as the whole run did.
    # fp16: the fused SGD and the GradScaler's state must come back from the checkpoint.
    ce = {"name": "ce"}
    setting = {"mixup_alpha": 1.0} if what == "mixup" else {"precision": "fp16"}
    plain = train(_digits(tmp_path, "plain", loss=ce))
    reference = train(_digits(tmp_path, "whole", loss=ce, **setting))
    _train_stopped_in_step(monkeypatch, _digits(tmp_path, "cut", loss=ce, **setting), 11, "epoch 2 step 3")  # 8 steps an epoch
    real_info = rundir.environment_info
    monkeypatch.setattr(rundir, "environment_info", lambda rt, cfg: {**real_info(rt, cfg), "threads": 99})
    run = train(resume_config(tmp_path / "cut"), tmp_path / "cut", resume=True)
    a, b, p = weights(reference), weights(run), weights(plain)
    # results.json says the run finished elsewhere than it started (here: with other threads)
    made = json.loads((run / "results.json").read_text())["environment"]
    assert made["precision"] == ("fp32" if what == "mixup" else "fp16")
    assert made["started"]["threads"] == 1 and made["finished"]["threads"] == 99
    assert "finished" not in json.loads((reference / "results.json").read_text())["environment"]
    assert _same_model(a, b)
    assert not _same_model(a, p)  # it did mix / round
    if what != "mixup":
        assert b["scaler"] == a["scaler"] and a["scaler"]["scale"] > 0
