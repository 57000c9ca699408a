"""The GPU training step reads nothing back to the host: each such read (a .item(), a bool() of a
tensor, a nonzero, a .tolist()) makes the CPU wait for the GPU's queue to drain, which for a small
model like ResNet-32 costs more than the kernels themselves. There is no GPU here, so these tests
count the operations that force such a read, on CPU tensors, for the code paths a GPU takes."""
import json
import sys
import warnings
from pathlib import Path

import pytest
import torch
from test_augment import smooth_images
from torch.utils._python_dispatch import TorchDispatchMode

from longtail import losses
from longtail.config import config_from_dict
from longtail.data import augment as A
from longtail.data import autoaugment as AA
from longtail.data.mixup import mixup_draw, mixup_epoch
from longtail.optim import build_optimizer
from longtail.train import setup, train_step

# Operators whose result size or value the host must know: on CUDA each one synchronises.
SYNCING_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.bincount", "aten.unique", "aten._unique",
               "aten.masked_select", "aten.repeat_interleave", "aten.equal", "aten.allclose", "aten.is_nonzero")
# Indexing with a boolean mask needs the mask's nonzero count (below the dispatcher on CPU).
MASK_INDEXING_OPS = ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_")
# Tensor methods that copy to the host on a GPU; on CPU tensors they return at once, so the
# counter wraps them itself.
HOST_COPY_METHODS = ("tolist", "cpu", "numpy")
# Copies the other way wait too: a tensor made on the device from Python or numpy data, or a host
# constant moved with .to(device), is a blocking copy from pageable memory (cudaMemcpy then a
# stream sync; the first GPU run found these in the augmentation). On CPU they cost nothing, so
# the counter wraps the calls that make them.
HOST_DATA_FUNCTIONS = ("tensor", "as_tensor", "from_numpy")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class HostReads(TorchDispatchMode):
    """Counts syncing operators (and .tolist(), which bypasses the dispatcher) while active."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket) if hasattr(func, "overloadpacket") else str(func)
        if name.startswith(SYNCING_OPS):
            self.seen.append(name)
        elif name == "aten.lift_fresh":  # a Python value made a tensor (t[i] = 3): on a GPU, a copy that waits
            self.seen.append(f"{name} at {_caller()}")
        elif name in MASK_INDEXING_OPS and len(args) > 1 and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] or ()):
            self.seen.append(f"{func} with a boolean mask")
        return func(*args, **(kwargs or {}))


def _module_constants() -> set[int]:
    """The tensors held at module level in longtail: made on the host at import, so on a GPU path
    moving one to the device each call is a copy (cache it per device instead)."""
    return {id(v) for name, m in list(sys.modules.items()) if name.startswith("longtail")
            for v in vars(m).values() if isinstance(v, torch.Tensor)}


def _caller() -> str:
    """file:line of the code that made the copy: the first frame outside torch and this file."""
    f = sys._getframe(1)
    while f is not None and ("/torch/" in f.f_code.co_filename or f.f_code.co_filename == __file__):
        f = f.f_back
    return f"{Path(f.f_code.co_filename).name}:{f.f_lineno}" if f is not None else "?"


@pytest.fixture
def host_reads(monkeypatch):
    def count(fn, *args, **kwargs):
        mode = HostReads()
        real = {name: getattr(torch.Tensor, name) for name in HOST_COPY_METHODS + ("to",)}
        real_fn = {name: getattr(torch, name) for name in HOST_DATA_FUNCTIONS}

        def wrap(name):
            def method(t, *a, **k):
                mode.seen.append(f"Tensor.{name}")
                return real[name](t, *a, **k)
            return method

        constants = _module_constants()

        def to(t, *a, **k):  # .to(dtype) stays on the device; .to(device) of a host constant copies
            if id(t) in constants and ("device" in k or any(isinstance(v, (torch.device, str)) for v in a)):
                mode.seen.append(f"Tensor.to(device) of a module constant at {_caller()}")
            return real["to"](t, *a, **k)

        def wrap_fn(name):
            def make(data, *a, **k):
                if not isinstance(data, torch.Tensor):
                    mode.seen.append(f"torch.{name}(host data) at {_caller()}")
                return real_fn[name](data, *a, **k)
            return make
        for name in HOST_COPY_METHODS:
            monkeypatch.setattr(torch.Tensor, name, wrap(name))
        monkeypatch.setattr(torch.Tensor, "to", to)
        for name in HOST_DATA_FUNCTIONS:
            monkeypatch.setattr(torch, name, wrap_fn(name))
        try:
            with mode:
                out = fn(*args, **kwargs)
        finally:
            for name in HOST_COPY_METHODS + ("to",):
                monkeypatch.setattr(torch.Tensor, name, real[name])
            for name in HOST_DATA_FUNCTIONS:
                monkeypatch.setattr(torch, name, real_fn[name])
        return out, mode.seen
    return count


def test_the_counter_sees_each_kind_of_host_read(host_reads):
    x = torch.arange(6)
    def scalar_assign():
        y = x.clone()
        y[0] = 3  # on CUDA the 3 is copied over from the host

    def mask_assign():
        y = x.clone()
        y[x > 2] = 0
    for fn in (lambda: x.sum().item(), lambda: bool((x > 2).any()), lambda: int(x.max()),
               lambda: (x > 2).nonzero(), lambda: x.tolist(), lambda: torch.bincount(x), lambda: x[x > 2],
               mask_assign, scalar_assign, lambda: torch.equal(x, x), lambda: torch.allclose(x.float(), x.float()),
               lambda: x.cpu(), lambda: x.numpy(), lambda: torch.tensor([1.0, 2.0], device=x.device),
               lambda: torch.as_tensor(0.5, device=x.device), lambda: A._JITTER_ORDERS.to(x.device),
               lambda: AA._SMOOTH.to(device="cpu")):
        _, seen = host_reads(fn)
        assert seen, fn
    _, seen = host_reads(lambda: torch.where(x > 2, x, -x).cumsum(0).to(torch.float32).to(x.device).fill_(3)
                         + torch.as_tensor(x))
    assert seen == []


@pytest.mark.parametrize("seed", [0, 1])
def test_autoaugment_sync_free_equals_grouped_and_reads_nothing(host_reads, seed):
    x = smooth_images(512, seed=seed).float()  # enough images for every operation to be drawn
    AA.autoaugment_cifar10(x[:2], torch.Generator().manual_seed(seed))  # makes the policy table it keeps
    grouped, seen_grouped = host_reads(AA.autoaugment_cifar10, x, torch.Generator().manual_seed(seed),
                                       sync_free=False)
    assert seen_grouped == ["aten.bincount", "Tensor.tolist"] * 2  # the CPU path's group sizes, per slot
    free, seen_free = host_reads(AA.autoaugment_cifar10, x, torch.Generator().manual_seed(seed), sync_free=True)
    assert seen_free == []
    assert torch.equal(free, grouped)
    assert not torch.equal(free, x)


def test_color_jitter_sync_free_equals_grouped_and_reads_nothing(host_reads):
    x = smooth_images(48, seed=3).float()
    factors = torch.empty(48, 3).uniform_(0.6, 1.4, generator=torch.Generator().manual_seed(0))
    order = A._JITTER_ORDERS[torch.randint(0, 6, (48,), generator=torch.Generator().manual_seed(1))]
    grouped, seen_grouped = host_reads(A.color_jitter, x, factors, order, 255.0, sync_free=False)
    assert seen_grouped
    free, seen_free = host_reads(A.color_jitter, x, factors, order, 255.0, sync_free=True)
    assert seen_free == []
    torch.testing.assert_close(free, grouped, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", A.AUGMENTS)
def test_every_training_recipe_is_sync_free_on_request(host_reads, kind):
    x = smooth_images(16, seed=1)
    aug = A.build_train_augment(kind, MEAN, STD, 32, sync_free=True)
    aug(x, torch.Generator().manual_seed(0))  # the first call makes the constants it keeps per device
    out, seen = host_reads(aug, x, torch.Generator().manual_seed(0))
    assert seen == [] and out.shape == (16, 3, 32, 32)
    same = A.build_train_augment(kind, MEAN, STD, 32, sync_free=False)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, same, rtol=0, atol=1e-4)


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run_state(run_dir, **keys):
    """The trainer's own RunState (longtail.train.setup) for a tiny run: the digits, a small convnet, on
    the CPU unless `keys` say otherwise (nested sections are merged), ready for `train_step` as
    train_epoch leaves it before its first step."""
    cfg = _merged({"device": "cpu", "data": {"name": "digits-lt", "imb_factor": 20, "val_per_class": 10,
                                             "image_size": 8, "augment": "none"},
                   "model": {"name": "convnet"}, "loss": {"name": "ce"},
                   "optim": {"epochs": 1, "batch_size": 16, "warmup_epochs": 0},
                   "precision": "fp32", "channels_last": False, "progress": "quiet", "threads": 1, "seed": 0}, keys)
    state = setup(config_from_dict(cfg), run_dir)
    state.model.train()
    state.criterion.train()
    state.nonfinite = torch.zeros((), dtype=torch.bool, device=state.rt.device)
    return state


def first_batch(state):
    """The first training batch of epoch 0, augmented, from the run's own loader."""
    return next(iter(state.loader.epoch(0, 0, state.aug_gen)))


@pytest.mark.parametrize("name", losses.available())
def test_training_step_reads_nothing_back_for_every_loss(host_reads, tmp_path, name):
    """The trainer's step (train_step: forward, the loss as setup builds it with check_values=False,
    backward, SGD) as a GPU run takes it, the loss checked only every few steps. Any host read here
    would stall the device every step."""
    state = run_state(tmp_path / "run", loss={"name": name})
    counts = state.bench.class_counts
    state.criterion.set_class_weights(losses.class_balanced_weights(counts))  # as DRW switches it on
    x, y = first_batch(state)
    train_step(state, x, y)  # the first step creates the momentum buffers
    (loss, hits), seen = host_reads(train_step, state, x, y)
    assert seen == [], seen
    assert torch.isfinite(loss) and not state.nonfinite and 0 <= hits <= len(y)
    # the same loss with its value checks on does read back (labels, finiteness): the counter works
    checked = losses.build(name, class_counts=counts, check_values=True).train()
    _, seen = host_reads(checked, state.model(x).detach(), y)
    assert seen
    # and so does the step that checks the loss at once (check_every=1, a CPU run's default)
    _, seen = host_reads(train_step, state, x, y, check_now=True)
    assert "aten.is_nonzero" in seen or "aten._local_scalar_dense" in seen, seen


def test_a_mixup_step_takes_its_pairs_from_the_epochs_one_copy(host_reads, tmp_path):
    """GCL's own recipe mixes images: the trainer draws an epoch's pairs at its start and moves them
    in one copy, so its step mixes, scores and counts hits without host data."""
    state = run_state(tmp_path / "run", optim={"mixup_alpha": 1.0})
    epoch = state.loader.epoch(0, 0, state.aug_gen)
    x, y = next(iter(epoch))
    plan = mixup_epoch(epoch.sizes, 1.0, seed=state.cfg.seed, epoch=0)  # as train_epoch draws them
    train_step(state, x, y, (*plan[0], None))  # the first step creates the momentum buffers
    (loss, _), seen = host_reads(train_step, state, x, y, (*plan[1], None))
    assert seen == [], seen
    assert torch.isfinite(loss)
    # drawing them in the step, as the trainer did until 2026-12-04, makes host data a tensor every step
    _, seen = host_reads(lambda: train_step(state, x, y, (*mixup_draw(len(y), 1.0, 0, 0, 2), None)))
    assert any(s.startswith("torch.from_numpy(host data)") for s in seen), seen


def test_an_fp16_step_reads_nothing_back_with_the_trainers_optimizer(host_reads, tmp_path):
    """fp16 (for GPUs without bf16) trains under a GradScaler, whose overflow flag the default SGD reads
    back at every step; the trainer's fp16 optimizer (fused SGD) takes it on the device. Its updates
    equal the default SGD's, and it still skips a step whose gradients overflowed."""

    def fp16_run(name, fused):
        state = run_state(tmp_path / name, precision="fp16")
        assert state.precision == "fp16" and state.scaler.is_enabled()
        assert bool(state.optimizer.defaults.get("fused"))  # what setup builds under fp16
        if not fused:  # the default SGD in its place, with the same settings
            o = state.cfg.optim
            state.optimizer = build_optimizer(state.model.parameters(), o.lr, o.momentum, o.nesterov, o.weight_decay)
            assert not state.optimizer.defaults.get("fused")
        x, y = first_batch(state)
        train_step(state, x, y)  # momentum buffers
        return state, x, y

    fused, x, y = fp16_run("fused", fused=True)
    _, seen = host_reads(train_step, fused, x, y)
    assert seen == [], seen
    # the default SGD under the same scaler waits for the flag: the counter sees it
    plain, x_plain, y_plain = fp16_run("plain", fused=False)
    assert torch.equal(x_plain, x) and torch.equal(y_plain, y)
    _, seen = host_reads(train_step, plain, x, y)
    assert "aten._local_scalar_dense" in seen
    for a, b in zip(fused.model.parameters(), plain.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # an overflowed step leaves the weights as they were and halves the scale (the loss is remembered
    # as non-finite, for the next check to stop the run)
    before = [p.detach().clone() for p in fused.model.parameters()]
    scale = fused.scaler.get_scale()
    poisoned = x.clone()
    poisoned[0] = float("inf")
    train_step(fused, poisoned, y)
    assert all(torch.equal(a, b) for a, b in zip(before, fused.model.parameters()))
    assert fused.scaler.get_scale() == scale / 2 and bool(fused.nonfinite)


def test_default_form_is_grouped_on_cpu_and_sync_free_elsewhere(host_reads):
    assert not AA.sync_free_default("cpu") and not AA.sync_free_default(torch.device("cpu"))
    assert AA.sync_free_default("cuda") and AA.sync_free_default("cuda:1") and AA.sync_free_default("mps")
    # On CPU the default is the grouped form: it splits the batch, so it does read back sizes.
    x = smooth_images(16, seed=5).float()
    AA.autoaugment_cifar10(x, torch.Generator().manual_seed(0))  # makes the policy table it keeps
    _, seen = host_reads(AA.autoaugment_cifar10, x, torch.Generator().manual_seed(0))
    assert seen == ["aten.bincount", "Tensor.tolist"] * 2
    factors = torch.empty(16, 3).uniform_(0.6, 1.4, generator=torch.Generator().manual_seed(0))
    _, seen = host_reads(A.color_jitter, x, factors, A._JITTER_ORDERS[torch.arange(16) % 6], 255.0)
    assert seen


def _cuda_waits(steps) -> list[str]:
    """Run each of `steps` under torch's sync debug mode, which warns of every call that makes the host
    wait for the GPU, with where it came from; the first line of each such warning."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in steps:
                step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the CUDA runtime itself reports each wait")
def test_cuda_training_step_never_waits_for_the_gpu(tmp_path):
    """On a real GPU, with torch's sync debug mode set to warn of every call that makes the host wait
    for the device, for every loss: the trainer's whole step (its loader's batch, sync-free augmentation
    from the device generator, bf16 autocast, channels_last ResNet-32, the loss as setup builds it,
    train_step's backward and SGD)."""
    waits = {}
    for name in losses.available():
        state = run_state(tmp_path / name, device="cuda", data={"augment": "autoaugment"},
                          model={"name": "resnet32"}, loss={"name": name}, optim={"batch_size": 32},
                          precision="bf16", channels_last=True)
        assert state.bench.augment.sync_free is not False  # sync-free by default on a GPU
        state.criterion.set_class_weights(losses.class_balanced_weights(state.bench.class_counts))
        batches = iter(state.loader.epoch(0, 0, state.aug_gen))  # the epoch's indices reach the GPU in one copy

        def step(state=state, batches=batches):
            x, y = next(batches)
            train_step(state, x, y)
        step()  # momentum buffers, cuDNN plans
        found = _cuda_waits([step] * 3)
        if found:
            waits[name] = found
        assert not bool(state.nonfinite), name
    assert waits == {}
    # the mode does catch a wait, so the check above can fail
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):
            state.nonfinite.item()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: the CUDA runtime itself reports each wait")
def test_cuda_fp16_and_mixup_steps_never_wait_for_the_gpu(tmp_path):
    """The two paths changed after the last GPU run, on a real GPU under torch's sync debug mode:
    the trainer's step under fp16 autocast with its GradScaler and fp16 optimizer (fused SGD), and mixup
    from an epoch's pairs."""
    state = run_state(tmp_path / "run", device="cuda", model={"name": "resnet32"}, optim={"mixup_alpha": 1.0},
                      precision="fp16")
    assert state.optimizer.defaults.get("fused")
    epoch = state.loader.epoch(0, 0, state.aug_gen)
    batches = iter(epoch)
    plan = mixup_epoch(epoch.sizes[:4], 1.0, seed=state.cfg.seed, epoch=0, device=state.rt.device)
    correct = torch.zeros((), device=state.rt.device)

    def step(lam, perm):
        nonlocal correct
        x, y = next(batches)
        _, hits = train_step(state, x, y, (lam, perm, None))
        correct += hits
    step(*plan[0])  # the scale, momentum buffers, cuDNN plans
    assert _cuda_waits([lambda lam=lam, perm=perm: step(lam, perm) for lam, perm in plan[1:]]) == []


@pytest.mark.parametrize("variant", ["plain", "mixup", "fp16"])
def test_the_trainers_own_loop_reads_nothing_back_per_step(host_reads, tmp_path, variant):
    """The tests above count the trainer's step; this one counts its loop around it. One epoch of the
    278 training images in batches of 32 (8 steps) and in batches of 16 (17 steps), with the same
    evaluation and checkpoints and the loss checked every 1,000 steps (as a GPU run checks every 25),
    must read back and copy to the device equally often: any read inside a step would show up 9
    more times."""
    from collections import Counter

    from longtail.train import train

    def run(batch_size):
        cfg = config_from_dict({
            "device": "cpu", "data": {"name": "digits-lt", "image_size": 8, "augment": "none", "val_per_class": 10},
            "model": {"name": "mlp"}, "loss": {"name": "ce"},
            "optim": {"epochs": 1, "batch_size": batch_size, "warmup_epochs": 0, "drop_last": True,
                      "mixup_alpha": 1.0 if variant == "mixup" else 0.0},
            "precision": "fp16" if variant == "fp16" else "fp32", "channels_last": False, "progress": "quiet",
            "threads": 1, "check_every": 1000, "out_dir": str(tmp_path), "run_name": f"b{batch_size}", "seed": 1})
        _, seen = host_reads(train, cfg)
        return Counter(seen), json.loads((tmp_path / f"b{batch_size}" / "metrics.jsonl").read_text())

    run(64)  # the first run makes the constants each device keeps (device_constants)
    (fewer, log_a), (more, log_b) = run(32), run(16)
    assert log_a["images_per_s"] > 0 and log_b["images_per_s"] > 0
    assert more - fewer == Counter() and fewer - more == Counter(), (more - fewer, fewer - more)
