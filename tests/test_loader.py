"""TrainLoader: the batches of an epoch, and the side-stream prefetch a GPU can use."""
import contextlib

import torch

from longtail.config import DataConfig
from longtail.data import load_benchmark
from longtail.data.loader import TrainLoader


def digits():
    return load_benchmark(DataConfig(name="digits-lt", imb_factor=20, val_per_class=10, image_size=8,
                                     augment="crop_flip"))


class FakeStream:
    """Stands in for a CUDA stream on the CPU: records the order of the calls a prefetch makes."""

    def __init__(self, log, name):
        self.log, self.name = log, name

    def wait_stream(self, other):
        self.log.append(f"{self.name} waits for {other.name}")


def test_prefetch_gives_the_same_batches_one_ahead(monkeypatch):
    bench = digits()
    plain = TrainLoader(bench, batch_size=32, seed=1)
    want = [(x.clone(), y.clone()) for x, y in plain.epoch(0, 0, torch.Generator().manual_seed(5))]
    log = []
    main, side = FakeStream(log, "main"), FakeStream(log, "side")
    prepared = []
    ahead = TrainLoader(bench, batch_size=32, seed=1, prefetch=True)
    ahead.device = torch.device("cuda")  # the CUDA path, with its stream calls stood in for
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: main)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: side)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda t, s: log.append(f"record on {s.name}"), raising=False)
    # as _prepared does, without the copy to a device this machine lacks
    monkeypatch.setattr(ahead, "_prepared", lambda x, y, g: prepared.append(1) or (bench.augment(x, g), y))
    monkeypatch.setattr(TrainLoader, "_fetch", lambda self, todo, epoch, start: iter(
        [(self.split.images[b], self.split.labels[b]) for b in todo]))
    # the augmentation stream's state after each batch, as a checkpoint there would save it
    plain_gen, plain_states = torch.Generator().manual_seed(5), []
    for _ in plain.epoch(0, 0, plain_gen):
        plain_states.append(plain.generator_state(plain_gen))
    got, gen = [], torch.Generator().manual_seed(5)
    for i, (x, y) in enumerate(ahead.epoch(0, 0, gen)):
        got.append((x.clone(), y.clone()))
        assert len(prepared) == len(got) + (len(got) < len(want))  # the next batch is ready before this one trains
        # though the next batch has drawn already, a checkpoint here saves the state a resume needs
        assert torch.equal(ahead.generator_state(gen), plain_states[i])
        assert not torch.equal(gen.get_state(), plain_states[i]) or i == len(want) - 1
    assert len(got) == len(want) and all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, want))
    # each batch: the side stream waits for the default one before it fetches, the default one for the
    # side stream before it trains, and both tensors are recorded on the default stream
    assert log[:5] == ["side waits for main", "main waits for side", "record on main", "record on main",
                       "side waits for main"]
