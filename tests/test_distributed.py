"""torchrun-style data parallelism on CPU with gloo and 2 processes, against one process on the same
global batches: same weights, same GALA statistics, every evaluation sample counted once."""
import json
import os
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from longtail.config import config_from_dict
from longtail.train import train

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(out_dir, name, loss="gala"):
    # mlp: no BatchNorm, whose per-rank batch statistics would differ from one process's by design
    # (SyncBatchNorm, model.sync_bn, needs GPUs).
    return {"data": {"name": "digits-lt", "image_size": 8, "augment": "none", "val_per_class": 10},
            "model": {"name": "mlp"}, "loss": {"name": loss, "mode": "reference"} if loss == "gala" else {"name": loss},
            "optim": {"epochs": 2, "batch_size": 32, "lr": 0.05, "warmup_epochs": 0, "drop_last": True},
            "eval": {"every": 1, "batch_size": 64}, "precision": "fp32", "channels_last": False,
            "progress": "quiet", "threads": 1, "out_dir": str(out_dir), "run_name": name, "seed": 3}


def _worker(rank, world, port, cfg_dict, run_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    train(config_from_dict(cfg_dict), run_dir=run_dir)


def test_two_gloo_ranks_match_one_process(tmp_path):
    single = train(config_from_dict(_config(tmp_path, "single")))
    mp.spawn(_worker, args=(2, _free_port(), _config(tmp_path, "ddp"), str(tmp_path / "ddp")), nprocs=2, join=True)
    ddp = tmp_path / "ddp"

    a = torch.load(single / "last.pt", weights_only=True)
    b = torch.load(ddp / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    # GALA statistics: increments summed over ranks = one process seeing the whole global batch (float
    # tolerance: the logits differ in the last bits between batch shapes; exact equality of the update
    # itself is tested in test_gala.py)
    for key in ("theta", "phi"):
        torch.testing.assert_close(b["loss"][key], a["loss"][key], rtol=1e-5, atol=0, msg=key)
    assert a["loss"]["theta"].abs().sum() > 0

    ra = json.loads((single / "results.json").read_text())
    rb = json.loads((ddp / "results.json").read_text())
    n_test = ra["checkpoints"]["last"]["raw"]["num_samples"]
    assert n_test == 500  # digits-lt test split: 50 per class
    assert rb["checkpoints"]["last"]["raw"]["num_samples"] == n_test  # each sample once, none duplicated
    assert rb["checkpoints"]["last"]["raw"]["top1"] == pytest.approx(ra["checkpoints"]["last"]["raw"]["top1"])
    assert rb["checkpoints"]["last"]["raw"]["per_class"] == pytest.approx(ra["checkpoints"]["last"]["raw"]["per_class"])
    # rank 0 alone writes the run folder's log; epochs once each
    epochs = [json.loads(line)["epoch"] for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def _predict_worker(rank, world, port, n, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from longtail import distributed
    from longtail.data import TensorSplit
    from longtail.evaluation import predict

    rt = distributed.init_runtime("cpu")
    torch.manual_seed(0)
    split = TensorSplit(torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8), torch.arange(n) % 3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    logits, labels = predict(model, split, lambda x: x.float(), rt.device, batch_size=4)
    if rt.is_main:
        torch.save({"logits": logits, "labels": labels, "images": split.images, "model": model.state_dict()}, out)
    distributed.shutdown()


def test_distributed_predict_counts_every_sample_once(tmp_path):
    n = 11  # not divisible by the world size: rank 0 gets 6 samples, rank 1 gets 5
    out = tmp_path / "pred.pt"
    mp.spawn(_predict_worker, args=(2, _free_port(), n, str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    model.load_state_dict(got["model"])
    with torch.no_grad():
        want = model(got["images"].float())
    assert got["logits"].shape == (n, 3)
    torch.testing.assert_close(got["logits"], want)
    assert got["labels"].tolist() == [i % 3 for i in range(n)]


def test_a_second_stage_on_two_gloo_ranks_matches_one_process(tmp_path):
    # frozen backbone (DDP must leave its parameters out of the gradient sync) and class-balanced
    # draws split across ranks: the head ends where one process on the same global batches puts it
    first = train(config_from_dict(_config(tmp_path, "first", loss="ce")))
    second = _config(tmp_path, "single", loss="ce")
    second["model"].update(init_from=str(first), freeze_backbone=True)
    second["data"]["sampler"] = "class_balanced"
    single = train(config_from_dict(second))
    mp.spawn(_worker, args=(2, _free_port(), {**second, "run_name": "ddp"}, str(tmp_path / "ddp")), nprocs=2,
             join=True)
    start = torch.load(first / "best.pt", weights_only=True)["model"]
    a = torch.load(single / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["model"]
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=1e-5, atol=1e-6, msg=key)
        if key.startswith("backbone."):
            assert torch.equal(b[key], start[key]), key
    assert not torch.equal(a["head.weight"], start["head.weight"])


def _stopped_worker(rank, world, port, cfg_dict, run_dir, out):
    """Rank 0 alone gets SIGTERM during the last epoch's validation (a scheduler signalling one
    process); writes what each rank ended with."""
    import signal

    from longtail import train as train_mod

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    real, calls = train_mod.predict, {"n": 0}

    def predict(*args, **kwargs):
        calls["n"] += 1
        if rank == 0 and calls["n"] == 3:  # epoch 2's validation (each epoch: val, test), after its last step
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    train_mod.predict = predict
    try:
        train_mod.train(config_from_dict(cfg_dict), run_dir=run_dir)
        ended = "finished"
    except train_mod.TrainingInterrupted as exc:
        ended = f"interrupted: {exc}"
    with open(f"{out}.{rank}", "w") as f:
        f.write(ended)


def test_a_stop_request_to_one_rank_stops_every_rank_together(tmp_path):
    cfg = _config(tmp_path, "ddp")
    cfg["eval"]["track_test"] = True
    run = tmp_path / "ddp"
    mp.spawn(_stopped_worker, args=(2, _free_port(), cfg, str(run), str(tmp_path / "ended")), nprocs=2, join=True)
    ended = [(tmp_path / f"ended.{rank}").read_text() for rank in (0, 1)]
    # both ranks stop before the final evaluation, neither waits in a collective for the other
    assert all(e.startswith("interrupted: interrupted during the final evaluation") for e in ended), ended
    assert not (run / "results.json").exists()
    assert torch.load(run / "last.pt", weights_only=True)["state"]["epoch"] == 2
    mp.spawn(_resume_worker, args=(2, _free_port(), str(run)), nprocs=2, join=True)
    assert json.loads((run / "results.json").read_text())["checkpoints"]["last"]["raw"]["num_samples"] == 500


def _resume_worker(rank, world, port, run_dir):
    from longtail.rundir import resume_config

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    train(resume_config(run_dir), run_dir=run_dir, resume=True)


def _bn_worker(rank, world, port, cfg_dict, run_dir, out):
    """Train on 2 ranks; write the model each rank evaluates at the end (last and best-on-validation)."""
    from longtail import train as train_mod

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    real = train_mod.finish

    def recording(state):
        torch.save({"last": {k: v.clone() for k, v in state.model.state_dict().items()}, "best": state.best_weights},
                   f"{out}.{rank}")
        return real(state)
    train_mod.finish = recording
    train_mod.train(config_from_dict(cfg_dict), run_dir=run_dir)


def test_every_rank_validates_and_tests_the_model_the_checkpoints_hold(tmp_path):
    # Without SyncBatchNorm each rank updates its batch-norm running statistics from its own share of
    # the batch (DDP re-broadcasts rank 0's only at the next forward). Validation (model selection) and
    # the final test split their samples over the ranks, so every rank must hold rank 0's statistics,
    # the ones saved in last.pt / best.pt, or the figures mix models that no checkpoint holds.
    cfg = _config(tmp_path, "ddp", loss="ce")
    cfg["model"]["name"] = "convnet"
    cfg["optim"]["epochs"] = 1
    run = tmp_path / "ddp"
    mp.spawn(_bn_worker, args=(2, _free_port(), cfg, str(run), str(tmp_path / "state")), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"state.{rank}", weights_only=True) for rank in (0, 1)]
    saved = {name: torch.load(run / f"{name}.pt", weights_only=True)["model"] for name in ("last", "best")}
    assert any("running_mean" in k for k in saved["last"])
    for which in ("last", "best"):
        for key, value in saved[which].items():
            for rank in (0, 1):
                assert torch.equal(ranks[rank][which][key], value), (which, key, rank)


@pytest.mark.parametrize("gpus, local_world, expected", [
    (0, 1, ["cpu"]), (0, 2, ["cpu", "cpu"]), (1, 1, ["cuda:0"]),
    (1, 2, ["cpu", "cpu"]),  # one GPU for two processes: all on the CPU (gloo), none left without a GPU
    (2, 2, ["cuda:0", "cuda:1"]), (4, 2, ["cuda:0", "cuda:1"])])
def test_auto_gives_each_process_a_gpu_of_its_own_or_all_the_cpu(monkeypatch, gpus, local_world, expected):
    from longtail.distributed import pick_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [str(pick_device("auto", r, local_world)) for r in range(local_world)] == expected
    # GPUs there but too few: rank 0 says why all of them train on the CPU
    assert len([w for w in caught if "GPU(s) visible" in str(w.message)]) == (1 if 0 < gpus < local_world else 0)


def test_cuda_for_a_process_without_a_gpu_says_how_many_to_start(monkeypatch):
    from longtail.distributed import pick_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert str(pick_device("cuda", 0, 2)) == "cuda:0"
    with pytest.raises(ValueError, match=r"process 1 of 2 on this node has no GPU of its own \(1 visible\)"):
        pick_device("cuda", 1, 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="no GPU is visible"):
        pick_device("cuda")


def _folder_worker(rank, world, port, cfg_dict, run_dir, out):
    import longtail.data as data

    real, calls = data.scan_folder, []
    data.scan_folder = lambda *a, **kw: calls.append(1) or real(*a, **kw)
    _worker(rank, world, port, cfg_dict, run_dir)
    (Path(out) / f"scans_rank{rank}").write_text(str(len(calls)))


def test_an_image_folder_is_scanned_by_the_main_rank_alone_and_split_alike(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, n in enumerate((16, 10, 6)):
        (tmp_path / "photos" / f"class{label}").mkdir(parents=True)
        for i in range(n):
            pixels = np.clip(rng.normal(60 + 60 * label, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / f"class{label}" / f"{i}.png")
    cfg = _config(tmp_path, "single", loss="ce")
    cfg["data"] = {"name": "folder", "root": str(tmp_path / "photos"), "image_size": 8, "resize": 8, "augment": "none",
                   "val_per_class": 2, "workers": 0}
    cfg["optim"]["batch_size"] = 8
    single = train(config_from_dict(cfg))
    mp.spawn(_folder_worker, args=(2, _free_port(), {**cfg, "run_name": "ddp"}, str(tmp_path / "ddp"), str(tmp_path)),
             nprocs=2, join=True)
    assert [(tmp_path / f"scans_rank{r}").read_text() for r in (0, 1)] == ["1", "0"]
    for name in ("train.txt", "val.txt", "test.txt"):  # the same split as one process makes
        assert (tmp_path / "ddp" / name).read_text() == (single / name).read_text()
    a = torch.load(single / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["model"]
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, rtol=1e-5, atol=1e-6, msg=key)
