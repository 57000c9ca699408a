"""Process-group plumbing for torchrun: who am I, which device, gather results from every rank.

One process: rank 0 of 1 and every function is a no-op. Under `torchrun` the usual environment
variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) start a process group: nccl
on GPUs, gloo on CPUs.
"""
from __future__ import annotations

import multiprocessing
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(preference: str = "auto", local_rank: int = 0, local_world: int = 1) -> torch.device:
    """The device of the process with ``local_rank`` of the ``local_world`` processes on this node.

    auto: one GPU per process when the node has a GPU for each, else the CPU for all of them (every
    rank picks alike, so they agree on the backend: nccl or gloo). cuda: GPU ``local_rank``, which
    must exist."""
    if preference == "auto":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        preference = "cuda" if gpus and gpus >= local_world else "cpu"
        if 0 < gpus < local_world and local_rank == 0:
            warnings.warn(f"device=auto: {local_world} processes on this node but {gpus} GPU(s) visible, so every "
                          "process trains on the CPU; start one process per GPU, or set device=cpu to silence this",
                          stacklevel=2)
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' asked for but no GPU is visible; use device=cpu or device=auto")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"device 'cuda': process {local_rank} of {local_world} on this node has no GPU of its "
                             f"own ({torch.cuda.device_count()} visible); start at most that many per node "
                             "(torchrun --nproc_per_node) or use device=cpu")
        return torch.device("cuda", local_rank)
    return torch.device(preference)


def init_runtime(preference: str = "auto") -> Runtime:
    """Join the torchrun process group when launched by torchrun; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Runtime(device=pick_device(preference))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    # torchrun sets LOCAL_WORLD_SIZE; a launcher that does not leaves the whole world as the bound
    device = pick_device(preference, local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(device=device, rank=rank, world_size=world, local_rank=local_rank)


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_varlen(t: torch.Tensor) -> torch.Tensor:
    """Concatenate tensors of different lengths (dim 0) from every rank, in rank order."""
    if not is_active():
        return t
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    longest = max(sizes)
    if longest == 0:
        return t
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if `flag` is true on any (so all ranks stop at the same step)."""
    if not is_active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def from_main(obj):
    """The main process's `obj` (any picklable value) on every rank; `obj` itself in one process."""
    if not is_active():
        return obj
    shared = [obj]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank `src`'s buffers (batch-norm running statistics). DDP broadcasts them only at
    the start of a forward, so after a training step each rank holds those of its own share of the batch."""
    if not is_active():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src)


def loader_context(workers: int):
    """The start method for DataLoader workers: the default (fork) in one process, forkserver under a
    process group. A rank runs gloo's communication threads, and a lock one of them holds at the
    moment of fork() stays held forever in the child, so a forked worker can hang; forkserver starts
    workers from a clean single-threaded server that has imported torch once."""
    if workers <= 0 or not is_active():
        return None
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "longtail.data"])  # has effect only before the server starts
    return ctx


def barrier() -> None:
    if is_active():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
