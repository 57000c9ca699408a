"""Batches for training and evaluation, whatever the storage (airbench's loader is the model).

    loader = TrainLoader(bench, batch_size=64, sampler="instance", seed=0, device=device)
    for x, y in loader.epoch(epoch, start_step, generator):   # augmented, normalised, on the device
        ...

A tensor benchmark (CIFAR, digits) lives on the training device: a batch is an index into it, and
the epoch's indices reach the device in one copy. Image files are decoded by the workers of one
DataLoader for the whole run (they start once), each image's random resized crop keyed by where it
is trained, so a resumed run crops alike. Either way the batch is then augmented on the device by
the benchmark's recipe (`bench.augment`), whose random draws come from the trainer's generator.
The batch order of an epoch is a pure function of (seed, epoch): longtail.data.sampling.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Subset

from longtail import distributed
from longtail.threads import usable_cpus

from . import Benchmark, TensorSplit
from .sampling import class_balanced_batches, epoch_batches

__all__ = ["TrainLoader", "Epoch", "eval_batches", "crop_keyed_batches", "EpochBatches"]


def crop_keyed_batches(batches: list[list[int]], seed: int, epoch: int, rank: int, first_step: int) -> list[list]:
    """(index, key) items for a dataset that crops as it decodes: the key (seed, epoch, rank, step,
    position in the batch) seeds that image's crop, the same however the epoch was resumed, and
    different for an image drawn twice (class-balanced sampling)."""
    return [[(i, (seed, epoch, rank, first_step + s, pos)) for pos, i in enumerate(batch)]
            for s, batch in enumerate(batches)]


class EpochBatches:
    """The batch sampler of the run's one DataLoader, set to each epoch's batches in turn: the
    DataLoader asks for them at the start of every epoch, so persistent workers serve each new
    epoch's order without being restarted."""

    def __init__(self):
        self.batches: list[list] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _own_generator() -> torch.Generator:
    """A DataLoader draws its workers' base seed from a generator each time it starts iterating: from
    torch's global one unless given its own. GCL's noise comes from the global one, which a resumed
    run would then see drawn once more than the uninterrupted run did."""
    return torch.Generator().manual_seed(0)


def _worker_error(exc: Exception) -> Exception:
    """A DataLoader worker's exception as the one line its dataset raised (the message the worker
    sends back carries the worker's whole traceback)."""
    text = str(exc)
    if "Original Traceback" not in text:
        return exc
    last = [line for line in text.splitlines() if line.strip()][-1]
    message = re.sub(r"^\w+(\.\w+)*: ", "", last)
    try:
        return type(exc)(message)
    except TypeError:  # an exception type that takes other arguments
        return RuntimeError(message)


def _from_workers(loader: DataLoader) -> Iterator:
    try:
        yield from loader
    except (OSError, ValueError, RuntimeError) as exc:
        clean = _worker_error(exc)
        if clean is exc:
            raise
        raise clean from None


class Epoch:
    """One epoch's batches from a given step on: `sizes` (this rank's batch sizes, e.g. for mixup's
    per-step draws) and the batches themselves, augmented on the device, by iterating."""

    def __init__(self, sizes: list[int], batches: Iterator[tuple[torch.Tensor, torch.Tensor]]):
        self.sizes, self._batches = sizes, batches

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self):
        return self._batches


class TrainLoader:
    """The training batches of `bench`, one epoch at a time, for this rank."""

    def __init__(self, bench: Benchmark, *, batch_size: int, sampler: str = "instance", seed: int = 0,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1, drop_last: bool = True,
                 workers: int = 0, prefetch: bool = False):
        self.bench, self.device, self.prefetch = bench, torch.device(device), prefetch
        self._before_ahead = None  # the generator's state before the batch augmented ahead (prefetch)
        self.batch_size, self.sampler, self.seed = batch_size, sampler, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.on_device = isinstance(bench.train, TensorSplit)
        if self.on_device:
            self.split = bench.train.to(self.device)
        else:  # one DataLoader for the whole run: its workers start once, not once per epoch
            self.split, self.plan = bench.train, EpochBatches()
            workers = min(workers, usable_cpus())  # more processes than cores only wait for each other
            self.files = DataLoader(bench.train, batch_sampler=self.plan, num_workers=workers,
                                    pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                                    multiprocessing_context=distributed.loader_context(workers),
                                    generator=_own_generator())

    def close(self) -> None:
        """Stop the DataLoader's worker processes now (they would otherwise live until garbage
        collection, which then waits for each of them)."""
        iterator = getattr(self, "files", None) and self.files._iterator
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        if getattr(self, "files", None) is not None:
            self.files._iterator = None

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """This rank's index batches of `epoch` (a pure function of seed and epoch)."""
        if self.sampler == "class_balanced":
            return class_balanced_batches(self.split.labels.cpu(), self.batch_size, epoch, self.seed, self.rank,
                                          self.world_size, self.drop_last)
        return epoch_batches(len(self.split), self.batch_size, epoch, self.seed, self.rank, self.world_size,
                             self.drop_last)

    def epoch(self, epoch: int, start_step: int, generator: torch.Generator) -> Epoch:
        """The batches of `epoch` from `start_step` on (a resumed epoch starts mid-way)."""
        todo = self.batches(epoch)[start_step:]
        return Epoch([len(b) for b in todo], self._augmented(self._fetch(todo, epoch, start_step), generator))

    def _fetch(self, todo: list[torch.Tensor], epoch: int, start_step: int) -> Iterator:
        if self.on_device:  # the epoch's indices go to the device in one copy, not one per step
            if not todo:
                return iter(())
            on_device = torch.cat(todo).to(self.device).split([len(b) for b in todo])
            return ((self.split.images[b], self.split.labels[b]) for b in on_device)
        self.plan.batches = [b.tolist() for b in todo]
        if self.split.crops_on_load:  # each image's crop keyed by where it is trained, so a resume repeats it
            self.plan.batches = crop_keyed_batches(self.plan.batches, self.seed, epoch, self.rank, start_step)
        return _from_workers(self.files)

    def generator_state(self, generator: torch.Generator) -> torch.Tensor:
        """`generator`'s state as of the batches handed out so far, for a checkpoint: under prefetch the
        next batch has drawn from it already, so the state from before that draw."""
        return generator.get_state() if self._before_ahead is None else self._before_ahead

    def _augmented(self, batches: Iterator, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.prefetch and self.device.type == "cuda":
            yield from self._ahead_on_a_side_stream(batches, generator)
            return
        for x, y in batches:
            yield self._prepared(x, y, generator)

    def _prepared(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator):
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        return self.bench.augment(x, generator), y

    def _ahead_on_a_side_stream(self, batches: Iterator, generator: torch.Generator):
        """Batch i+1 fetched and augmented on a side CUDA stream while the model trains on batch i on
        the default one (the pattern of NVIDIA's data_prefetcher). The augmentation draws its random
        numbers in the same order, so the batches are the ones `prefetch` off gives."""
        main, side = torch.cuda.current_stream(self.device), torch.cuda.Stream(self.device)

        def ahead():
            side.wait_stream(main)  # the epoch's indices, copied on the default stream, are there
            with torch.cuda.stream(side):
                batch = next(batches, None)
                return None if batch is None else self._prepared(*batch, generator)

        ready = ahead()
        while ready is not None:
            main.wait_stream(side)
            for t in ready:  # made on the side stream, used on the default one: not reused before that
                t.record_stream(main)
            before = generator.get_state()
            current, ready = ready, ahead()
            self._before_ahead = before if ready is not None else None
            yield current
        self._before_ahead = None


def eval_batches(split, device: torch.device, batch_size: int, index: torch.Tensor,
                 workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 image batches and labels of split[index], in that order, on `device`."""
    if isinstance(split, TensorSplit):
        for chunk in index.split(batch_size):
            yield (split.images[chunk.to(split.images.device)].to(device, non_blocking=True),
                   split.labels[chunk.to(split.labels.device)].to(device))
        return
    workers = min(workers, usable_cpus())
    loader = DataLoader(Subset(split, index.tolist()), batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", multiprocessing_context=distributed.loader_context(workers),
                        generator=_own_generator())
    for x, y in _from_workers(loader):
        yield x.to(device, non_blocking=True), y.to(device)
