"""The benchmark scripts' baselines and timing rules (benchmarks/*.py): the re-statements of the released
GALA code do what the released `collect_grad` does (so speed ratios against them are honest), and the
timing options cannot put start-up or compilation into a rate."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def released_collect_grad(batches, c):
    """lt-project run_networks.py `collect_grad`, in float64: per sample, |g_i| into column y_i of the
    running matrix and row y_i of the epoch matrix; cumulative pos/neg C x C totals every step."""
    fine, epoch, pos, neg = (torch.zeros(c, c, dtype=torch.float64) for _ in range(4))
    eye = torch.eye(c, dtype=torch.float64)
    for z, y in batches:
        g = ((torch.softmax(z.double(), 1) - F.one_hot(y, c)) / len(y)).abs()
        for i in range(len(y)):
            fine[:, y[i]] += g[i]
            epoch[y[i], :] += g[i]
        pos += fine * eye
        neg += fine * (1 - eye)
    return {"theta": pos.sum(1), "phi": neg.sum(0), "epoch": epoch,
            "ratio": (pos.sum(1) + 1e-10) / (neg.sum(1) + 1e-10)}


def batches(c=7, b=12, steps=3):
    gen = torch.Generator().manual_seed(0)
    return [(2 * torch.randn(b, c, generator=gen), torch.randint(0, c, (b,), generator=gen)) for _ in range(steps)]


class CountEye:
    def __init__(self, monkeypatch):
        self.calls, real = 0, torch.eye

        def eye(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(torch, "eye", eye)


def test_loss_speed_released_loop_does_all_of_the_released_collect_grad(monkeypatch):
    # it did one of the two per-sample adds and no per-step eye mask: a cheaper "released loop",
    # which understated the speed-up printed against it
    mod = load("loss_speed")
    c, data = 7, batches()
    released = mod.ReleasedStats(c)
    eye = CountEye(monkeypatch)
    for z, y in data:
        theta, phi = released.update(z, y)
    assert eye.calls == len(data)  # a fresh eye mask every step, as released
    ref = released_collect_grad(data, c)
    assert released.M.dtype == torch.float32  # as released
    torch.testing.assert_close(theta.double(), ref["theta"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(phi.double(), ref["phi"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(released.epoch_neg.double(), ref["epoch"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(released.ratio.double(), ref["ratio"], rtol=1e-5, atol=1e-7)


def test_train_step_released_gala_does_all_of_the_released_collect_grad(monkeypatch):
    # float64 and one add per sample before: not the released code's work
    mod = load("_released_baseline")
    c, data = 7, batches()
    crit = mod.ReleasedGALA(c).train()
    eye = CountEye(monkeypatch)
    for z, y in data:
        crit.collect_grad(z, y)
    assert eye.calls == len(data)
    ref = released_collect_grad(data, c)
    assert crit.cls_fine_grad.dtype == torch.float32 and crit.pos_grad.dtype == torch.float32
    torch.testing.assert_close(crit.pos_grad.double(), ref["theta"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(crit.neg_grad.double(), ref["phi"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(crit.neg_logit_grad_epoch.double(), ref["epoch"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(crit.cls_pos_neg_ratio.double(), ref["ratio"], rtol=1e-5, atol=1e-7)


def test_loss_speed_times_the_update_and_the_released_loop_interleaved():
    # part 2 timed the two one after the other, so load from other jobs could fall on one of them only
    mod = load("loss_speed")
    calls = []
    fast, slow = mod.median_times([lambda: calls.append("f"), lambda: calls.append("s")], [3, 1], repeats=2)
    assert "".join(calls) == "fffs" + "fffs" * 2  # warm-up, then each repeat times both, each its count
    assert fast >= 0 and slow >= 0


@pytest.mark.parametrize("argv", [["--warmup", "0"], ["--steps", "0"]])
def test_train_step_refuses_timing_without_warmup_or_steps_before_loading_data(monkeypatch, argv):
    # --warmup 0 put DataLoader start-up and torch.compile's compilation into the timed rate (and then
    # crashed formatting the missing first-step time); --steps 0 divided by zero
    mod = load("train_step")

    def no_data(*args, **kwargs):
        raise AssertionError("the options must be refused before the data loads")
    monkeypatch.setattr(mod, "load_benchmark", no_data)
    monkeypatch.setattr(sys, "argv", ["train_step.py", *argv])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the test process keeps its threads
    with pytest.raises(SystemExit) as exc:
        mod.main()
    assert exc.value.code == 2


@pytest.mark.slow
def test_device_data_pack_carries_exactly_the_official_benchmark_and_refuses_a_changed_one(shared_data, tmp_path):
    """The GPU machine's copy of CIFAR-100-LT: blanked, it loads only with verify=False, and then the
    benchmark it gives must equal the official one tensor for tensor; a changed kept image is caught."""
    import json
    import pickle

    from longtail.config import DataConfig
    from longtail.data import load_benchmark

    def cifar100_lt(root, **kw):
        return load_benchmark(DataConfig(name="cifar100-lt", root=str(root), **kw))

    dd = load("device_data")
    archive = dd.pack(str(shared_data), 100.0, tmp_path / "pack", preset=None)  # a plain tar: xz is slow
    dd.unpack(archive, tmp_path / "data")
    with pytest.raises(ValueError, match="checksum mismatch"):  # the blanked pickle is not the official file
        cifar100_lt(tmp_path / "data")
    official = cifar100_lt(shared_data)
    copy = cifar100_lt(tmp_path / "data", verify=False)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(copy, split).images, getattr(official, split).images)
        assert torch.equal(getattr(copy, split).labels, getattr(official, split).labels)
    kept = json.loads((tmp_path / "pack" / "cifar100_lt_if100.sha256.json").read_text())["kept_train_images"]
    assert kept == len(official.train) + len(official.val)
    # blanked: every image outside the subset and the validation split is zero
    with open(tmp_path / "data" / "cifar-100-python" / "train", "rb") as f:
        data = pickle.load(f, encoding="latin1")["data"]
    assert int((data.reshape(len(data), -1).max(1) > 0).sum()) == kept

    # a copy whose images differ from the official ones (here: the official digest changed) is refused
    digests = tmp_path / "pack" / "cifar100_lt_if100.sha256.json"
    record = json.loads(digests.read_text())
    record["digests"]["train.images"] = "0" * 64 + record["digests"]["train.images"][64:]
    digests.write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="train.images differ"):
        dd.unpack(archive, tmp_path / "again")


def test_gpu_queue_refuses_runs_of_another_imbalance_factor_than_its_pack(tmp_path):
    # the packed copy zeroes every image outside its IF's subset: an IF200 pack under an IF100 run
    # would train on blank images without a word, so the script stops before anything starts
    import os
    import subprocess

    env = {**os.environ, "OUT": str(tmp_path / "out"), "RUNS_DIR": str(tmp_path / "runs"), "DATA": str(tmp_path / "data"),
           "PACK": ".gpu/cifar100_lt_if200.tar.xz", "RUNS": "cifar100_lt_if200_ce_s1 cifar100_lt_if100_ce_s1"}
    done = subprocess.run(["bash", str(BENCH / "gpu_queue.sh")], cwd=BENCH.parent, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "cifar100_lt_if100_ce_s1 is not a cifar100_lt_if200 run" in done.stderr
    assert not any(tmp_path.iterdir())  # no output, no data, no run folder


def run_script(name, *args, timeout=300):
    import subprocess

    done = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=BENCH.parent)
    assert done.returncode == 0, f"{name}.py exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.parametrize("name, args, expect", [
    ("op_count", ["--batch", "4"], "| augmentation autoaugment, sync-free (GPU default) |"),
    ("decode_cost", ["--images", "3", "--reps", "1"], "| random_resized (RandomResizedCrop(224) from the whole image) |"),
    ("predict_speed", ["--images", "2", "--reps", "1", "--batch-size", "2", "--threads", "1"], "| resnet32 @ 32 |"),
])
def test_quick_scripts_run_on_the_current_api(name, args, expect):
    # the scripts import longtail's internals: a changed API must show here, not on the next benchmark day
    assert expect in run_script(name, *args)


@pytest.mark.slow
def test_train_step_runs_both_paths_and_checks_they_do_the_same_work(shared_data):
    out = run_script("train_step", "--data-root", shared_data, "--paths", "fp32,base0", "--steps", "1", "--warmup", "1",
                     "--check", "--threads", "1")
    assert "check passed: same inputs, same GALA loss, gradients and statistics" in out
    assert "| ours fp32 " in out and "| baseline: released path, 0 workers " in out
    assert "10827 training images" in out  # the benchmark as the trainer loads it (IF100, 20 a class to validation)


def test_reproduce_queue_dry_run_counts_the_archived_runs_as_done(tmp_path):
    out = run_script("reproduce_cifar", "--out", tmp_path / "runs", "--dry-run", "--only", "cifar100_lt_if100_ce_s0",
                     "cifar100_lt_if100_gcl_s0")
    assert f"done     {tmp_path / 'runs' / 'cifar100_lt_if100_ce_s0'}" in out
    assert not (tmp_path / "runs").exists()  # a dry run makes nothing
