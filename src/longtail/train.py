"""The training loop: one process or torchrun/DDP, checkpoints, resume.

    run_dir = train(load_config("configs/cifar100_lt_if100_gala_reference.yaml"))

`setup` builds a `RunState` (model, optimiser, loss with its statistics, data loader, random
streams, epoch and step) or restores one from a run folder; `train_epoch` runs `train_step` over an
epoch's batches; `end_of_epoch` evaluates, selects on validation and checkpoints; `finish` tests the
selected checkpoint once. The batch order of epoch e is a pure function of (seed, e), and the
augmentation generator's state is saved with each checkpoint, so a run interrupted at any step
resumes to the same weights as an uninterrupted one.
"""
from __future__ import annotations

import functools
import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from longtail import distributed, losses, metrics, models, rundir
from longtail.config import (
    Config,
    ConfigError,
    config_from_dict,
    experiment_settings,
    keys_where,
    read_yaml,
    resolve,
    save_config,
    settings_fingerprint,
)
from longtail.data import Benchmark, data_fingerprint, load_benchmark
from longtail.data.folder import write_split_lists
from longtail.data.loader import TrainLoader
from longtail.data.mixup import cut, cutmix_epoch, mix, mixed_loss, mixup_epoch
from longtail.data.sampling import batches_per_epoch
from longtail.evaluation import autocast_context, evaluate_model, predict, report_markdown, resolve_precision
from longtail.optim import SAM, MaxNorm, build_optimizer
from longtail.progress import RunOutput
from longtail.threads import default_threads

__all__ = ["train", "setup", "train_step", "train_epoch", "end_of_epoch", "finish", "RunState", "learning_rate",
           "method_name", "TrainingDiverged", "TrainingInterrupted"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C / SIGTERM: a checkpoint was written and `--resume` continues from it."""


class _StopNow(KeyboardInterrupt):
    """Raised by the stop handler itself, wherever the program is. A KeyboardInterrupt, so that no
    `except Exception` on the way (a checkpoint read, an image decode) takes it for its own failure;
    train() turns it into TrainingInterrupted."""


def learning_rate(epoch: int, o) -> float:
    """Learning rate of 0-based `epoch` (SPEC section 5): linear warm-up lr*(e+1)/W over W epochs,
    then cosine or step. The cosine follows the released GALA code (1-based epoch E, peak at E = W,
    zero at the last epoch): with W = 2 and 200 epochs, 0.05, 0.1, then cosine to 0 at epoch 200."""
    if epoch < o.warmup_epochs:
        return o.lr * (epoch + 1) / o.warmup_epochs
    if o.schedule == "cosine":
        if o.warmup_epochs == 0:  # no warm-up: start at the peak (torch's CosineAnnealingLR)
            progress = epoch / o.epochs
        else:
            progress = (epoch + 1 - o.warmup_epochs) / max(o.epochs - o.warmup_epochs, 1)
        return o.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    factor = 1.0
    for milestone, f in zip(o.milestones, o.step_factors):
        if epoch >= milestone:
            factor = f
    return o.lr * factor


def method_name(cfg: Config) -> str:
    name = cfg.loss.name
    p = cfg.loss.params
    if name == "gala":
        name += f"-{p.get('mode', 'paper')}"
    if name == "la" and "tau" in p:
        name += f"(tau={p['tau']})"
    if cfg.loss.drw_epoch is not None:
        name += "-drw"
    if cfg.model.freeze_backbone:
        name += "-crt"  # classifier re-training: the second stage of a two-stage method
    return name


# ----------------------------------------------------------------------------- the run's state

@dataclass
class RunState:
    """Everything a run carries from step to step; a checkpoint saves it and `restore` loads it."""

    cfg: Config
    run_dir: Path
    rt: distributed.Runtime
    bench: Benchmark
    model: torch.nn.Module  # the weights (what checkpoints hold)
    criterion: losses.LongTailLoss  # with its statistics (GALA)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: TrainLoader
    precision: str
    aug_gen: torch.Generator  # the augmentation's random stream, on the training device
    net: torch.nn.Module | None = None  # what a step calls: the model, or its DDP / compiled wrapper
    sam: SAM | None = None
    max_norm: MaxNorm | None = None
    epoch: int = 0  # epochs finished
    step: int = 0  # steps finished in the current epoch
    best_val: float = -1.0
    best_val_epoch: int | None = None
    best_test: float = -1.0
    best_test_epoch: int | None = None
    images_seen: int = 0
    train_time: float = 0.0
    first_stage: dict | None = None
    data_fingerprint: str = ""
    best_weights: dict | None = None  # the best-on-validation weights, kept in memory when found
    epoch_so_far: dict | None = None  # a mid-epoch checkpoint's sums over the epoch's earlier steps
    nonfinite: torch.Tensor | None = None  # any NaN/inf loss since the last check

    COUNTERS = ("epoch", "step", "best_val", "best_val_epoch", "best_test", "best_test_epoch", "images_seen",
                "train_time", "first_stage", "data_fingerprint")

    @property
    def main(self) -> bool:
        return self.rt.is_main


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_runnable(cfg: Config, rt: distributed.Runtime) -> None:
    """What depends on how the run is started, checked before anything is written."""
    if cfg.optim.batch_size % rt.world_size:
        raise ConfigError(f"optim.batch_size {cfg.optim.batch_size} (global) must be divisible by the "
                          f"{rt.world_size} processes")
    if cfg.model.freeze_backbone and not (cfg.model.init_from or cfg.model.pretrained):
        # a shipped second-stage config leaves init_from empty: which first-stage run is the user's
        raise ConfigError("model.freeze_backbone trains only the head, so the backbone must come from somewhere: "
                          "set model.init_from=RUN_FOLDER (the first stage's run) or model.pretrained=FILE")
    if cfg.model.sync_bn and rt.device.type != "cuda":
        raise ConfigError("model.sync_bn needs GPUs (PyTorch's SyncBatchNorm has no CPU kernel); set it to false")
    if cfg.tensorboard:  # fail before anything is written, not after the data has loaded
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ImportError("tensorboard=true needs the tensorboard package: pip install 'longtail[tensorboard]'"
                              ) from None


def _check_epoch_has_batches(cfg: Config, bench: Benchmark, rt: distributed.Runtime) -> None:
    """Refuse a run whose epochs would hold no batch (it would "train" nothing and still write results).
    Both samplers make as many draws per epoch as there are training images."""
    if not batches_per_epoch(len(bench.train), cfg.optim.batch_size, rt.world_size, cfg.optim.drop_last):
        raise ConfigError(f"an epoch would hold no batch: optim.batch_size {cfg.optim.batch_size} is larger than "
                          f"the {len(bench.train)} training images and optim.drop_last is true (always so with "
                          "several processes); lower the batch size or set optim.drop_last=false")


def _optimizer(cfg: Config, model: torch.nn.Module, precision: str):
    """SGD over the trainable parameters (under fp16 torch's fused SGD, to which GradScaler hands the
    overflow flag on the device), the backbone's in a group of its own when it learns at another
    rate; wrapped in SAM when optim.sam_rho is set."""
    o = cfg.optim
    trainable = [p for p in model.parameters() if p.requires_grad]
    params = trainable
    if cfg.model.backbone_lr != 1:
        backbone = {id(p) for p in model.backbone.parameters()}
        params = [{"params": [p for p in trainable if id(p) in backbone], "lr_scale": cfg.model.backbone_lr},
                  {"params": [p for p in trainable if id(p) not in backbone], "lr_scale": 1.0}]
    base = build_optimizer(params, o.lr, o.momentum, o.nesterov, o.weight_decay, fused=precision == "fp16")
    return base, (SAM(base, o.sam_rho, o.sam_adaptive) if o.sam_rho else None)


def load_first_stage(model: torch.nn.Module, cfg: Config) -> dict:
    """Load a longtail run's weights (backbone and head) into `model`, for a second stage.

    `model.init_from` is a finished run folder (its best.pt, else last.pt) or a .pt file; its run must
    have used this run's data split. Returns what the results record of it: the file, the first
    stage's method, seed and settings."""
    source = Path(cfg.model.init_from)
    if source.is_dir() and not (source / "results.json").exists():
        raise ValueError(f"model.init_from: the run {source} has not finished (no results.json); wait for it, "
                         "or name one of its .pt files to start from that checkpoint anyway")
    try:
        path = rundir.find_checkpoint(source)
        ckpt = rundir.read_checkpoint(path)
    except (ValueError, FileNotFoundError) as exc:
        raise type(exc)(f"model.init_from: {exc}") from None
    info = {"checkpoint": str(path)}
    if isinstance(ckpt.get("config"), dict):
        first = resolve(config_from_dict(ckpt["config"]))
        for name in keys_where("split"):
            section, leaf = name.split(".")
            there, here = getattr(getattr(first, section), leaf), getattr(getattr(cfg, section), leaf)
            if leaf.endswith("_list"):  # the same list file may be reached by another path
                there, here = (Path(v).name if v else v for v in (there, here))
            if there != here:
                raise ValueError(f"model.init_from: {path} was trained on another split ({name} {there!r} there, "
                                 f"{here!r} here); a second stage must keep its first stage's training and "
                                 "validation images")
        info.update(method=method_name(first), seed=first.seed, settings=experiment_settings(first))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError(f"model.init_from: the weights in {path} do not fit this model (same model.name, "
                         f"head and number of classes needed): {str(exc).splitlines()[0]}") from None
    return info


def setup(cfg: Config, run_dir: str | Path | None = None, resume: bool = False) -> RunState:
    """A new run's state, or with `resume` the state saved in `run_dir`'s last.pt."""
    cfg = resolve(cfg)
    rt = distributed.init_runtime(cfg.device)
    threads = cfg.threads or (default_threads() if rt.device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    _check_runnable(cfg, rt)
    # a timestamped name can differ across ranks: the main process's
    run_dir = Path(run_dir) if run_dir is not None else Path(distributed.from_main(str(rundir.new_run_dir(cfg))))
    if not resume:
        rundir.refuse_existing_run(run_dir)
    seed_everything(cfg.seed + rt.rank)
    pretrained = (models.PRETRAINED_MEAN, models.PRETRAINED_STD) if cfg.model.pretrained else None
    bench = _load_data(cfg, rt, run_dir if resume else None, pretrained)
    _check_epoch_has_batches(cfg, bench, rt)
    if not cfg.eval.test and bench.val is None:
        raise ConfigError("eval.test=false keeps validation figures only, and this data has no validation split: "
                          "give it one (data.val_per_class > 0, or data.val_list=FILE)")
    model = models.build_model(cfg.model.name, bench.num_classes, head=cfg.model.head, scale=cfg.model.scale,
                               in_channels=bench.channels,  # a resume's weights come from last.pt
                               pretrained=None if resume else cfg.model.pretrained).to(rt.device)
    first_stage = load_first_stage(model, cfg) if cfg.model.init_from and not resume else None
    if cfg.model.freeze_backbone:
        model.backbone.requires_grad_(False)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # The loop watches the loss for NaN/inf itself and the labels were checked when loaded: skip the
    # losses' own value checks, which read tensors back to the host (a stall per step on a GPU).
    criterion = losses.build(cfg.loss.name, class_counts=bench.class_counts,
                             **{"check_values": False, **cfg.loss.params}).to(rt.device)
    precision = rundir.run_precision(cfg, run_dir, rt.device) if resume else resolve_precision(cfg.precision, rt.device)
    if cfg.optim.sam_rho and precision == "fp16":  # precision auto on a GPU without bf16
        raise ConfigError("optim.sam_rho trains in fp16 here (precision auto on a GPU without bf16), and SAM's two "
                          "passes do not go with the fp16 gradient scaler; set precision=fp32")
    optimizer, sam = _optimizer(cfg, model, precision)
    loader = TrainLoader(bench, batch_size=cfg.optim.batch_size, sampler=cfg.data.sampler, seed=cfg.seed,
                         device=rt.device, rank=rt.rank, world_size=rt.world_size, drop_last=cfg.optim.drop_last,
                         workers=cfg.data.workers, prefetch=cfg.data.prefetch)
    state = RunState(cfg, run_dir, rt, bench, model, criterion, optimizer,
                     torch.amp.GradScaler(rt.device.type, enabled=precision == "fp16"), loader, precision,
                     torch.Generator(device=rt.device), sam=sam, first_stage=first_stage,
                     # the main process's: it alone writes checkpoints (stat-ing every image file is slow on NFS)
                     data_fingerprint=data_fingerprint(bench, test=cfg.eval.test) if rt.is_main else "",
                     nonfinite=torch.zeros((), dtype=torch.bool, device=rt.device))
    if cfg.optim.max_norm is not None:
        state.max_norm = MaxNorm.relative(model.head.weight, cfg.optim.max_norm)
    if resume:
        restore(state)
        if state.main:  # a resume may change runtime keys (data.root, eval.batch_size): eval reads them here
            save_config(cfg, run_dir / "config.yaml")
    elif state.main:
        rundir.start_run_dir(run_dir, cfg, rundir.environment_info(rt, cfg))
        if bench.split_lists:
            lists = bench.split_lists
            write_split_lists(run_dir, lists["classes"], lists["train"], lists["val"], lists["test"])
        for note in bench.notes:
            print(f"note: {note}", flush=True)
    distributed.barrier()
    state.net = _wrapped(model, cfg, rt)
    return state


def _load_data(cfg: Config, rt: distributed.Runtime, lists_dir: Path | None, normalisation) -> Benchmark:
    """The run's benchmark. An image folder new to the run is scanned (each image decoded once) and
    split by the main process alone; the other ranks take its split."""
    load = functools.partial(load_benchmark, cfg.data, test=cfg.eval.test, lists_dir=lists_dir,
                             normalisation=normalisation)
    if not (rt.distributed and cfg.data.name == "folder" and lists_dir is None):
        return load()
    bench = load() if rt.is_main else None
    split = distributed.from_main(bench.split_lists if bench is not None else None)
    return bench if bench is not None else load(folder_split=split)


def _wrapped(model: torch.nn.Module, cfg: Config, rt: distributed.Runtime) -> torch.nn.Module:
    net = model
    if cfg.model.sync_bn and rt.distributed:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if rt.distributed:
        net = DistributedDataParallel(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net, mode=None if cfg.compile_mode == "default" else cfg.compile_mode)
    return net


# ----------------------------------------------------------------------------- checkpoints

def save(state: RunState, name: str = "last.pt", so_far: dict | None = None) -> None:
    """Write the run's state to run_dir/name. Every rank's random streams go in (augmentation, global
    torch e.g. GCL's noise), so each resumes its own; mid-epoch also its sums over the epoch's steps
    so far, so that the resumed epoch's log line, train time and images seen are an uninterrupted one's."""
    rt = state.rt
    mine = {"aug": state.loader.generator_state(state.aug_gen).cpu(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(rt.device) if rt.device.type == "cuda" else None,
            **({"epoch_so_far": so_far} if so_far else {})}
    rngs = [None] * rt.world_size
    if rt.distributed:
        torch.distributed.all_gather_object(rngs, mine)
    else:
        rngs = [mine]
    if state.main:
        rundir.atomic_save({"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
                            "loss": state.criterion.state_dict(), "scaler": state.scaler.state_dict(),
                            "state": {k: getattr(state, k) for k in RunState.COUNTERS}, "rng": rngs,
                            "max_norm": state.max_norm.state_dict() if state.max_norm else None,
                            "world_size": rt.world_size, "config": state.cfg.to_dict()}, state.run_dir / name)


def restore(state: RunState) -> None:
    """Load run_dir/last.pt into `state`; its data must be the data the run trained on."""
    run_dir, rt = state.run_dir, state.rt
    try:
        ckpt = rundir.read_checkpoint(run_dir / "last.pt", rt.device)
    except ValueError as exc:
        backup = ("; best.pt is a whole checkpoint too (of the best epoch on validation): copy it over last.pt "
                  "to resume from that epoch" if (run_dir / "best.pt").exists() else "")
        raise ValueError(f"cannot resume: {exc}{backup}") from None
    if ckpt["world_size"] != rt.world_size:
        raise ValueError(f"{run_dir} was trained with {ckpt['world_size']} processes; resume it with the same "
                         f"number (got {rt.world_size}): the batches and random streams depend on it")
    saved = ckpt["state"].get("data_fingerprint")
    if distributed.any_rank(bool(saved and state.main and saved != state.data_fingerprint), rt.device):
        was = read_yaml(run_dir / "config.yaml").get("data", {}).get("root")
        raise ValueError(f"the data at data.root={state.cfg.data.root} is not the data {run_dir} trained on "
                         f"(data.root={was}): give that data's folder, or leave data.root as it was")
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.criterion.load_state_dict(ckpt["loss"])
    state.scaler.load_state_dict(ckpt["scaler"])
    if state.max_norm and ckpt.get("max_norm"):
        state.max_norm.load_state_dict(ckpt["max_norm"])
    for k, v in ckpt["state"].items():
        setattr(state, k, v)
    rng = ckpt["rng"][rt.rank]
    # generator states must be CPU byte tensors, and the checkpoint was mapped to the training device
    state.aug_gen.set_state(rng["aug"].cpu())
    torch.set_rng_state(rng["torch"].cpu())
    if rt.device.type == "cuda" and rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"].cpu(), rt.device)
    state.epoch_so_far = rng.get("epoch_so_far")  # only a mid-epoch checkpoint has one
    if state.main:
        where = (f"all {state.cfg.optim.epochs} epochs are trained; running the final evaluation"
                 if state.epoch >= state.cfg.optim.epochs
                 else f"at epoch {state.epoch + 1} step {state.step}")
        print(f"resuming {run_dir}: {where}", flush=True)


# ----------------------------------------------------------------------------- a step and an epoch

def train_step(state: RunState, x: torch.Tensor, y: torch.Tensor, mixing=None,
               check_now: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on the augmented batch (x, y). `mixing` is this step's (lam, perm, box)
    (mixup: box None; CutMix: the pasted box) or None. Returns the loss and the number of images
    classified right (lam-weighted when mixed) as device tensors: nothing is read back to the host;
    under SAM they are the second pass's, at the perturbed weights. A NaN/inf loss is remembered in
    state.nonfinite; with `check_now` it raises before the optimiser steps (no checkpoint follows)."""
    if mixing is not None:
        lam, perm, box = mixing
        x = mix(x, lam, perm) if box is None else cut(x, box, perm)
    if state.cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def loss_of(logits):
        return mixed_loss(state.criterion, logits, y, lam, perm) if mixing is not None else state.criterion(logits, y)

    def forward():
        with autocast_context(state.rt.device, state.precision):
            logits = state.net(x)
        return logits.float()

    if state.sam:  # the ascent pass adds nothing to the loss's statistics: the second pass does, once
        state.optimizer.zero_grad(set_to_none=True)
        with state.criterion.frozen():
            loss_of(forward()).backward()
        state.sam.first_step()
    logits = forward()
    loss = loss_of(logits)
    state.nonfinite |= ~torch.isfinite(loss.detach())
    if check_now:
        _raise_if_diverged(state, f"step {state.step + 1}")
    if state.sam:
        loss.backward()
        state.sam.second_step()
    else:
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        if state.cfg.optim.grad_clip:
            state.scaler.unscale_(state.optimizer)
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), state.cfg.optim.grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
    if state.max_norm:
        state.max_norm.step()
    pred = logits.argmax(1)
    hits = (pred == y).sum() if mixing is None else (lam * (pred == y) + (1.0 - lam) * (pred == y[perm])).sum()
    return loss.detach(), hits


def _raise_if_diverged(state: RunState, where: str) -> None:
    # all ranks decide together, or one rank stops while the others wait in all-reduce
    if distributed.any_rank(bool(state.nonfinite), state.rt.device):
        raise TrainingDiverged(f"the loss became NaN or inf at epoch {state.epoch + 1}, {where}")


def _epoch_mixing(state: RunState, epoch: int, start_step: int, sizes: list[int]) -> list | None:
    """Each step's (lam, perm, box) for mixup or CutMix (a step CutMix skips: None), drawn for the
    whole epoch at its start, the permutations on the device in one copy; None without mixing."""
    o, rt = state.cfg.optim, state.rt
    if o.mixup_alpha:
        return [(lam, perm, None)
                for lam, perm in mixup_epoch(sizes, o.mixup_alpha, state.cfg.seed, epoch, start_step, rt.rank, rt.device)]
    if o.cutmix_alpha:
        size = state.cfg.data.image_size
        draws = cutmix_epoch(sizes, o.cutmix_alpha, o.cutmix_prob, state.cfg.seed, epoch, start_step, rt.rank,
                             rt.device, height=size, width=size)
        return [None if d is None else (d.lam, d.perm, d.box) for d in draws]
    return None


def _set_learning_rate(state: RunState, epoch: int) -> float:
    lr = learning_rate(epoch, state.cfg.optim)
    for group in state.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    lc = state.cfg.loss
    if lc.drw_epoch is not None and epoch >= lc.drw_epoch:
        if not state.criterion.weighted:
            state.criterion.set_class_weights(losses.class_balanced_weights(state.bench.class_counts, lc.drw_beta))
    elif lc.name != "cb":  # `cb` carries its weights from the start
        state.criterion.set_class_weights(None)
    return lr


def train_epoch(state: RunState, epoch: int, stop: StopRequests, out: RunOutput) -> dict:
    """Train one epoch (from state.step on after a mid-epoch resume); returns its log record. Every
    `check_every` steps the loss is checked for NaN/inf and a stop request for a checkpoint."""
    cfg, rt = state.cfg, state.rt
    lr = _set_learning_rate(state, epoch)
    start = state.step
    if start == 0:
        state.aug_gen.manual_seed(cfg.seed * 1_000_003 + epoch * 101 + rt.rank)
    batches = state.loader.epoch(epoch, start, state.aug_gen)
    mixing = _epoch_mixing(state, epoch, start, batches.sizes)
    state.model.train()
    if cfg.model.freeze_backbone:  # its batch-norm statistics stay as loaded
        state.model.backbone.eval()
    state.criterion.train()
    so_far = state.epoch_so_far or {}
    state.epoch_so_far = None
    loss_sum = torch.zeros((), device=rt.device) + so_far.get("loss_sum", torch.zeros(())).to(rt.device)
    correct = torch.zeros((), device=rt.device) + so_far.get("correct", torch.zeros(())).to(rt.device)
    seen, time_before = so_far.get("seen", 0), so_far.get("time_s", 0.0)
    state.nonfinite = torch.zeros((), dtype=torch.bool, device=rt.device)
    check_every = cfg.check_every or (1 if rt.device.type == "cpu" else 25)
    checked = shown = start  # the last step whose loss was checked / shown in the progress line
    t0 = time.perf_counter()
    if out.watch:
        out.watch.restart()
    for step, (x, y) in enumerate(batches, start):
        loss, hits = train_step(state, x, y, mixing[step - start] if mixing else None, check_now=check_every == 1)
        state.step = step + 1
        loss_sum += loss * len(y)
        correct += hits
        seen += len(y)
        if out.watch:
            out.watch.update(len(y))
        if state.step % check_every and state.step != start + len(batches):
            continue
        if check_every > 1:
            _raise_if_diverged(state, f"one of steps {checked + 1}-{state.step}")
        checked = state.step
        if out.bar and state.step - shown >= 10:  # at most every 10 steps, only where values are read
            shown = state.step
            rate = (seen - so_far.get("seen", 0)) / (time.perf_counter() - t0)  # this process's own rate
            out.step_line(f"epoch {epoch + 1}/{cfg.optim.epochs} step {state.step}/{start + len(batches)} "
                          f"loss {loss_sum.item() / seen:.4f} acc {100 * correct.item() / seen:.1f}% "
                          f"{rate * rt.world_size:.0f} img/s")
        if distributed.any_rank(stop.requested, rt.device):
            save(state, so_far={"loss_sum": loss_sum.detach().cpu(), "correct": correct.detach().cpu(),
                                "seen": seen, "time_s": time_before + time.perf_counter() - t0})
            raise TrainingInterrupted(f"interrupted at epoch {epoch + 1} step {state.step}; a checkpoint was "
                                      f"written: continue with `longtail train --resume {state.run_dir}`")
    elapsed = time_before + time.perf_counter() - t0
    state.train_time += elapsed
    state.images_seen += seen * rt.world_size
    return {"epoch": epoch + 1, "lr": lr, "loss": _global_mean(loss_sum, seen),
            "train_acc": 100 * _global_mean(correct, seen), "time_s": round(elapsed, 3),
            "images_per_s": round(seen * rt.world_size / max(elapsed, 1e-9), 1)}


def _global_mean(total: torch.Tensor, count: int) -> float:
    t = torch.stack([total.float(), torch.tensor(float(count), device=total.device)])
    if distributed.is_active():
        torch.distributed.all_reduce(t)
    return float(t[0] / max(float(t[1]), 1.0))


def _logits(model, split, state: RunState) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = state.cfg
    return predict(model, split, state.bench.eval_transform, state.rt.device, state.precision,
                   cfg.eval.batch_size, cfg.channels_last, cfg.data.workers)


def _top1(model, split, state: RunState) -> float:
    logits, targets = _logits(model, split, state)
    return 100.0 * float((logits.argmax(1) == targets).float().mean()) if len(targets) else 0.0


def end_of_epoch(state: RunState, record: dict, out: RunOutput) -> None:
    """Validate (every eval.every epochs and at the last), keep the best-on-validation weights and
    best.pt, log the epoch, write last.pt."""
    cfg, epoch = state.cfg, record["epoch"]
    # evaluate, on every rank, the model the checkpoints hold: rank 0's batch-norm statistics
    distributed.broadcast_buffers(state.model)
    due = epoch % cfg.eval.every == 0 or epoch == cfg.optim.epochs
    if state.bench.val is not None and due:
        record["val_acc"] = _top1(state.model, state.bench.val, state)
        if record["val_acc"] > state.best_val:
            state.best_val, state.best_val_epoch = record["val_acc"], epoch
            state.best_weights = {k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()}
            state.epoch, state.step = epoch, 0
            save(state, "best.pt")
    if due and cfg.eval.track_test and cfg.eval.test:
        test_top1 = _top1(state.model, state.bench.test, state)
        record["test_acc_for_best_on_test_figure"] = test_top1
        if test_top1 > state.best_test:
            state.best_test, state.best_test_epoch = test_top1, epoch
    out.epoch_done(record)  # logged before the checkpoint: a resume drops log lines the checkpoint does not cover
    state.epoch, state.step = epoch, 0
    save(state)


# ----------------------------------------------------------------------------- the end of a run

def finish(state: RunState) -> dict:
    """Test the best-on-validation and the last weights once; write results.json (last: it marks a
    finished run), results.md, the selected weights' logits and the per-class plot."""
    cfg, rt, run_dir = state.cfg, state.rt, state.run_dir
    settings = experiment_settings(cfg)
    first = (state.first_stage or {}).get("settings")
    setting = settings_fingerprint({**settings, **{f"first_stage.{k}": v for k, v in (first or {}).items()}})
    results = {"run": run_dir.name, "dataset": cfg.data.name,
               "imb_factor": cfg.data.imb_factor if cfg.data.name.startswith("cifar") else None,
               "method": method_name(cfg), "seed": cfg.seed, "epochs": cfg.optim.epochs,
               "settings": settings, "setting": setting, "config": cfg.to_dict(),
               "train_time_s": round(state.train_time, 1),
               "train_images_per_s": round(state.images_seen / max(state.train_time, 1e-9), 1),
               "best_val": {"epoch": state.best_val_epoch, "top1": state.best_val},
               **({"first_stage": state.first_stage} if state.first_stage else {}),
               "best_test_epoch": ({"epoch": state.best_test_epoch, "top1": state.best_test,
                                    "note": "epoch selected on the TEST set, as papers report; not honest"}
                                   if state.best_test_epoch else None),
               "environment": rundir.made_on(run_dir, rt, cfg, state.precision),
               **({"notes": state.bench.notes} if state.bench.notes else {}),
               # what applying the model to new images needs (longtail predict / export)
               "data": {"classes": state.bench.class_names, "class_counts": state.bench.class_counts,
                        "mean": list(state.bench.mean), "std": list(state.bench.std), "image_size": cfg.data.image_size,
                        "resize": cfg.data.resize},
               "checkpoints": {}}
    if not cfg.eval.test:  # validation figures only: the test split is never read
        results["test_evaluated"] = False
        if _load_best(state):  # setup refused a validation-only run without a validation split
            val = _logits(state.model, state.bench.val, state)
            results["validation"] = metrics.evaluate(*val, state.bench.class_counts)
            if state.main:
                rundir.save_logits(run_dir, {"val": val})
        if state.main:
            rundir.write_results(run_dir, results, f"# {_title(results)}\n\nValidation only (eval.test=false): "
                                 f"best validation top-1 {state.best_val:.2f} at epoch {state.best_val_epoch}.\n")
        return results
    results["checkpoints"]["last"], preds = evaluate_model(state.model, state.bench, cfg, rt.device, state.precision)
    if _load_best(state):
        report, preds = evaluate_model(state.model, state.bench, cfg, rt.device, state.precision)
        results["checkpoints"] = {"best_val": report, **results["checkpoints"]}
    if "val" in preds:  # the selected weights on the validation split, by shot group: what a search compares
        results["validation"] = metrics.evaluate(*preds["val"], state.bench.class_counts)
    if state.main:
        from longtail.report import plot_per_class  # matplotlib: only when a run ends

        rundir.save_logits(run_dir, preds)
        chosen = results["checkpoints"].get("best_val") or results["checkpoints"]["last"]
        plot_per_class({"raw": chosen["raw"]["per_class"],
                        **({"PR (tau on val)": chosen["pr"]["per_class"]} if "pr" in chosen else {})},
                       state.bench.class_counts, run_dir / "per_class.png", title=_title(results))
        rundir.write_results(run_dir, results, f"# {_title(results)}\n\n" + report_markdown(results))
    return results


def _load_best(state: RunState) -> bool:
    """Put the best-on-validation weights into the model: kept in memory when found (every rank has
    them: validation accuracy is gathered), or read from best.pt after a resume. False if there are none."""
    best = state.best_weights
    if best is None and state.best_val_epoch is not None:  # found before a resume: in best.pt
        best = rundir.read_checkpoint(state.run_dir / "best.pt")["model"]
    if best is None:
        return False
    state.model.load_state_dict(best)
    return True


def _title(results: dict) -> str:
    from longtail.report import run_title

    return run_title(results)


def _position(checkpoint: Path) -> str:
    """Where a checkpoint stands: the end of an epoch, or a step within one."""
    saved = rundir.read_checkpoint(checkpoint)["state"]
    return f"epoch {saved['epoch'] + 1} step {saved['step']}" if saved["step"] else f"the end of epoch {saved['epoch']}"


class StopRequests:
    """Ctrl-C and SIGTERM while a run trains: the first sets `requested`, which the loop reads
    between steps (all ranks together) to checkpoint and stop. In one process a second request, or
    one while nothing reads the flag (`now` set: the final evaluation), stops at once: last.pt is the
    last checkpoint written either way. Under torchrun the ranks must stop together, so a request
    there always waits for the next check."""

    def __init__(self, run_dir: Path, one_process: bool):
        self.run_dir, self.one_process = run_dir, one_process
        self.requested, self.now, self._old = False, None, {}

    def __enter__(self) -> StopRequests:
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        if self.one_process and (self.now or self.requested):
            raise _StopNow(self.now or f"interrupted again before the next checkpoint; continue from the last one "
                           f"with `longtail train --resume {self.run_dir}`")
        self.requested = True


def train(cfg: Config, run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Train per `cfg`; returns the run folder. With `resume`, continue the run in `run_dir`."""
    state = setup(cfg, run_dir, resume)
    cfg = state.cfg
    out = RunOutput(state.run_dir, cfg.progress, state.main, cfg.optim.epochs, state.epoch if resume else None,
                    cfg.tensorboard, torch.get_num_threads() if state.rt.device.type == "cpu" else None)
    try:
        with StopRequests(state.run_dir, not state.rt.distributed) as stop:
            for epoch in range(state.epoch, cfg.optim.epochs):
                end_of_epoch(state, train_epoch(state, epoch, stop, out), out)
            out.close()
            distributed.barrier()
            stop.now = (f"interrupted during the final evaluation; training is finished and in last.pt: "
                        f"`longtail train --resume {state.run_dir}` runs the evaluation again")
            if distributed.any_rank(stop.requested, state.rt.device):  # asked for during the last validation
                raise TrainingInterrupted(stop.now)
            results = finish(state)
    except _StopNow as exc:
        raise TrainingInterrupted(str(exc)) from None
    except TrainingDiverged as exc:
        good = state.run_dir / "last.pt"
        where = f"the last good checkpoint is {good} ({_position(good)})" if good.exists() else \
            "no checkpoint was written before it"
        raise TrainingDiverged(f"training diverged: {exc}; {where}. Lower optim.lr, use precision=fp32, or "
                               "check the data") from None
    finally:
        out.close()
        state.loader.close()
    if state.main and cfg.progress != "quiet":
        print(report_markdown(results), flush=True)
    distributed.shutdown()
    return state.run_dir
