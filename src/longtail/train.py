"""The training loop, top to bottom: one process or torchrun/DDP, checkpoints, logging, resume.

    run_dir = train(load_config("configs/cifar100_lt_if100_gala_reference.yaml"))

Small datasets (CIFAR, digits) are held as one uint8 tensor on the training device and batched
by index with augmentation done on the batch there; large ones stream through a DataLoader whose
workers decode JPEGs. The batch order of epoch e is a pure function of (seed, e), and the
augmentation generator's state is saved with each checkpoint, so a run interrupted at any step
resumes to the same weights as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from longtail import distributed, losses, models
from longtail.config import Config, ConfigError, save_config, saved_config_from_dict, setting_key
from longtail.data import TensorSplit, load_benchmark
from longtail.data.augment import LARGE_IMAGE_AUGMENTS, RANDAUGMENT_PAD, build_eval_transform, build_train_augment
from longtail.data.mixup import mix, mixed_loss, mixup_epoch
from longtail.data.sampling import batches_per_epoch, class_balanced_batches, epoch_batches
from longtail.evaluation import autocast_context, evaluate_model, predict, report_markdown, resolve_precision
from longtail.safe_load import UnsafeFileError, load_tensors
from longtail.threads import RateWatch, default_threads


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C / SIGTERM: a checkpoint was written and `--resume` continues from it."""


class _StopNow(KeyboardInterrupt):
    """Raised by the stop handler itself, wherever the program is. A KeyboardInterrupt, so that no
    `except Exception` on the way (a checkpoint read, an image decode) takes it for its own failure;
    train() turns it into TrainingInterrupted."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, ...); the previous one is intact."""


# ----------------------------------------------------------------------------- schedule and batches

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


def crop_keyed_batches(batches: list[list[int]], seed: int, epoch: int, rank: int, first_step: int) -> list[list]:
    """(index, key) items for a dataset that crops as it decodes: the key (seed, epoch, rank, step,
    position in the batch) seeds that image's crop, the same however the epoch was resumed, and
    different for an image drawn twice (class-balanced sampling)."""
    return [[(i, (seed, epoch, rank, first_step + s, pos)) for pos, i in enumerate(batch)]
            for s, batch in enumerate(batches)]


class EpochBatches:
    """The batch sampler of a run's one training DataLoader, set to each epoch's batches in turn.

    The DataLoader asks its sampler for batches in the main process at the start of every epoch,
    so persistent workers serve each new epoch's order without being restarted."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


# ----------------------------------------------------------------------------- run folder I/O

def write_replacing(path: Path, write) -> None:
    """`write(tmp)` to a temp file beside `path`, then rename it over `path`: a crash, a full disk or
    a stop request leaves the previous `path` (or none), never a half-written one or the temp file."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(obj, path: Path) -> None:
    """torch.save through write_replacing; a failed write says what is intact and how to continue."""
    try:
        write_replacing(path, lambda tmp: torch.save(obj, tmp))
    except (OSError, RuntimeError) as exc:
        # torch's writer reports a full disk as a RuntimeError ("unexpected pos ..."), not an OSError
        if isinstance(exc, RuntimeError) and not _is_write_failure(exc):
            raise
        reason = getattr(exc, "strerror", None) or "the file system refused the write"
        prev = f"the previous {path.name} is intact" if path.exists() else "no earlier checkpoint existed"
        free = shutil.disk_usage(path.parent).free / 2**20
        raise CheckpointWriteError(f"could not write checkpoint {path} ({reason}; {free:.0f} MiB free there); "
                                   f"{prev}. Free disk space, then continue with `longtail train --resume "
                                   f"{path.parent}`") from None


def _is_write_failure(exc: RuntimeError) -> bool:
    text = str(exc)
    return "PytorchStreamWriter" in text or "unexpected pos" in text or "write" in text.lower()


def read_checkpoint(path: Path, map_location) -> dict:
    """A checkpoint written by `longtail train`; a damaged or foreign file is a ValueError naming it."""
    try:
        ckpt = load_tensors(path, map_location)
    except (OSError, UnsafeFileError):
        raise
    except Exception as exc:  # torch.load's errors for a bad file vary: zip, pickle, EOF, unknown classes
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path} is not a readable checkpoint (truncated or damaged?): {detail}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{path} is not a longtail checkpoint (no 'model' weights in it)")
    return ckpt


def started_precision(run_dir: str | Path) -> str | None:
    """The precision a run folder's run started with (None when environment.json lacks it)."""
    try:
        return json.loads((Path(run_dir) / "environment.json").read_text()).get("precision")
    except (OSError, ValueError):
        return None


def run_precision(cfg: Config, run_dir: str | Path, device: torch.device) -> str:
    """The precision an existing run folder's run trains and evaluates in. "auto" depends on the
    machine, so it means the precision the run started with (a run resumed or evaluated on another
    machine is not trained half in fp32 and half in bf16); an explicit precision is kept."""
    started = started_precision(run_dir) if cfg.precision == "auto" else None
    return started or resolve_precision(cfg.precision, device)


def environment_info(rt: distributed.Runtime, cfg: Config) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "device": str(rt.device), "world_size": rt.world_size,
            "threads": torch.get_num_threads(), "seed": cfg.seed, "argv": sys.argv,
            "precision": resolve_precision(cfg.precision, rt.device)}
    if rt.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(rt.device)
    return info


def made_on(run_dir: Path, rt: distributed.Runtime, cfg: Config, precision: str) -> dict:
    """What results.json says about where a run was made: the precision it trained in, the machine it
    started on (environment.json) and, when a resume moved it, the one it finished on; so archived
    seeds made on different machines and precisions say so themselves."""
    try:
        started = json.loads((Path(run_dir) / "environment.json").read_text())
    except (OSError, ValueError):  # missing or damaged: say nothing rather than lose a finished run
        started = None
    now = {k: v for k, v in environment_info(rt, cfg).items() if k not in ("argv", "seed", "precision")}
    if started is None or any(started.get(k) != v for k, v in now.items()):
        return {"precision": precision, "started": started, "finished": now}
    return {"precision": precision, "started": started}


class Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, mode: str, enabled: bool):
        self.on = enabled and (mode == "bar" or (mode == "auto" and sys.stderr.isatty()))

    def update(self, text: str) -> None:
        if self.on:
            sys.stderr.write("\r" + text[:150].ljust(150))
            sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\n")


def new_run_dir(cfg: Config) -> Path:
    name = cfg.run_name or f"{cfg.data.name}-{cfg.loss.name}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.out_dir) / name


# ----------------------------------------------------------------------------- building blocks

def build_model(cfg: Config, num_classes: int, in_channels: int):
    head = cfg.model.head
    if head == "auto":
        head = "cosine" if cfg.loss.name in losses.COSINE_HEAD_LOSSES else "linear"
    return models.build_model(cfg.model.name, num_classes, head=head, scale=cfg.model.scale, in_channels=in_channels,
                              pretrained=cfg.model.pretrained)


def load_data(cfg: Config):
    d = cfg.data
    return load_benchmark(d.name, d.root, imb_factor=d.imb_factor, val_per_class=d.val_per_class,
                          val_seed=d.val_seed, val_shortfall=d.val_shortfall, download=d.download, train_list=d.train_list, val_list=d.val_list,
                          test_list=d.test_list, image_size=d.image_size, resize=d.resize,
                          limit_per_class=d.limit_per_class, limit_eval_per_class=d.limit_eval_per_class,
                          verify=d.verify,
                          # list datasets take the random resized crop (after the released recipe's
                          # reflect padding) as they decode
                          train_crop=d.train_crop if d.augment in LARGE_IMAGE_AUGMENTS else "square",
                          train_pad=RANDAUGMENT_PAD if d.augment == "imagenet_randaugment" and d.train_crop == "random_resized" else 0)


# The data keys that fix which images are trained on and which are held out for validation: a
# second stage must keep its first stage's, or it could select on images the backbone trained on.
SPLIT_KEYS = ("name", "imb_factor", "val_per_class", "val_seed", "val_shortfall", "train_list", "val_list")


def load_run_weights(model, source: str | Path, device: torch.device, cfg: Config) -> dict:
    """Load a longtail run's model weights (backbone and head) into `model`, for a second stage.

    `source` is a finished run folder (its best.pt, else last.pt) or a .pt file. The run must have
    used this run's data split (SPLIT_KEYS). Returns what the results record of it: the file, and
    the first stage's method, seed and config."""
    path = Path(source)
    if path.is_dir():
        if not (path / "results.json").exists():
            raise ValueError(f"model.init_from: the run {path} has not finished (no results.json); wait for it, "
                             "or name one of its .pt files to start from that checkpoint anyway")
        path = path / "best.pt" if (path / "best.pt").exists() else path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from: no checkpoint at {path} (give a run folder or a .pt file "
                                "written by `longtail train`)")
    try:
        ckpt = read_checkpoint(path, device)
    except ValueError as exc:
        raise ValueError(f"model.init_from: {exc}") from None
    state = ckpt["model"]
    info = {"checkpoint": str(path)}
    if isinstance(ckpt.get("config"), dict):
        first = saved_config_from_dict(ckpt["config"])
        for key in SPLIT_KEYS:
            there, here = getattr(first.data, key), getattr(cfg.data, key)
            if key.endswith("_list"):  # the same list file may be reached by another path
                there, here = (Path(v).name if v else v for v in (there, here))
            if there != here:
                raise ValueError(f"model.init_from: {path} was trained on another split (data.{key} {there!r} "
                                 f"there, {here!r} here); a second stage must keep its first stage's training and "
                                 "validation images")
        info.update(method=method_name(first), seed=first.seed, config=ckpt["config"])
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"model.init_from: the weights in {path} do not fit this model (same model.name, "
                         f"head and number of classes needed): {exc}") from None
    return info


def apply_drw(criterion, cfg: Config, epoch: int, counts) -> None:
    if cfg.loss.drw_epoch is not None and epoch >= cfg.loss.drw_epoch:
        if not criterion.weighted:
            criterion.set_class_weights(losses.class_balanced_weights(counts, cfg.loss.drw_beta))
    elif cfg.loss.name != "cb":  # `cb` carries its weights from the start
        criterion.set_class_weights(None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- the loop

def train(cfg: Config, run_dir: str | Path | None = None, resume: bool = False) -> Path:
    """Train per `cfg`; returns the run folder. With `resume`, continue the run in `run_dir`."""
    rt = distributed.init_runtime(cfg.device)
    threads = cfg.threads or (default_threads() if rt.device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    main = rt.is_main
    if cfg.optim.batch_size % rt.world_size:
        raise ValueError(f"optim.batch_size {cfg.optim.batch_size} (global) must be divisible by the "
                         f"{rt.world_size} processes")
    if cfg.model.freeze_backbone and not (cfg.model.init_from or cfg.model.pretrained):
        # a shipped second-stage config leaves init_from empty: which first-stage run is the user's
        raise ConfigError("model.freeze_backbone trains only the head, so the backbone must come from somewhere: "
                          "set model.init_from=RUN_FOLDER (the first stage's run) or model.pretrained=FILE")
    run_dir = Path(run_dir) if run_dir is not None else new_run_dir(cfg)
    if not resume:
        # a finished run's results, even without its last.pt (deleted to save space), are not overwritten;
        # a folder with only best.pt (killed before the first last.pt) holds nothing to continue or keep
        held = [name for name in ("last.pt", "results.json") if (run_dir / name).exists()]
        if held:
            hint = f"use `longtail train --resume {run_dir}` or " if "last.pt" in held else "use "
            raise FileExistsError(f"{run_dir} already holds a run ({', '.join(held)}); {hint}another run folder")
    if cfg.tensorboard:  # fail before anything is written, not after the data has loaded
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("tensorboard=true needs the tensorboard package: pip install 'longtail[tensorboard]'"
                              ) from None
    seed_everything(cfg.seed + rt.rank)

    bench = load_data(cfg)
    counts = bench.class_counts
    check_epoch_has_batches(cfg, bench, rt)
    in_channels = (bench.train.images.shape[1] if isinstance(bench.train, TensorSplit) else 3)
    model = build_model(cfg, bench.num_classes, in_channels).to(rt.device)
    first_stage = None
    if cfg.model.init_from and not resume:  # a resumed run's weights come from its own last.pt
        first_stage = load_run_weights(model, cfg.model.init_from, rt.device, cfg)
    if cfg.model.freeze_backbone:
        model.backbone.requires_grad_(False)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # The loop watches the loss for NaN/inf itself and the labels were checked when loaded: skip the
    # losses' own value checks, which read tensors back to the host (a stall per step on a GPU).
    criterion = losses.build(cfg.loss.name, class_counts=counts, **{"check_values": False, **cfg.loss.params})
    criterion = criterion.to(rt.device)
    # cfg keeps "auto", so the run still groups with its seeds in reports
    precision = run_precision(cfg, run_dir, rt.device) if resume else resolve_precision(cfg.precision, rt.device)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.optim, precision)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=precision == "fp16")

    state = {"epoch": 0, "step": 0, "best_val": -1.0, "best_val_epoch": None, "best_test": -1.0,
             "best_test_epoch": None, "images_seen": 0, "train_time": 0.0, "first_stage": first_stage}
    aug_gen = torch.Generator(device=rt.device)
    resumed_so_far = None  # a mid-epoch checkpoint's sums over that epoch's steps before it (this rank's)
    if resume:
        ckpt = read_resume_checkpoint(run_dir, rt.device)
        model.load_state_dict(ckpt["model"])
        load_optimizer_state(optimizer, ckpt["optimizer"])
        criterion.load_state_dict(ckpt["loss"])
        scaler.load_state_dict(ckpt["scaler"])
        state.update(ckpt["state"])
        if ckpt["world_size"] != rt.world_size:
            raise ValueError(f"{run_dir} was trained with {ckpt['world_size']} processes; resume it with the same "
                             f"number (got {rt.world_size}): the batches and random streams depend on it")
        rng = ckpt["rng"][rt.rank]
        # generator states must be CPU byte tensors, and the checkpoint was mapped to the training device
        aug_gen.set_state(rng["aug"].cpu())
        torch.set_rng_state(rng["torch"].cpu())
        if rt.device.type == "cuda" and rng["cuda"] is not None:
            torch.cuda.set_rng_state(rng["cuda"].cpu(), rt.device)
        resumed_so_far = rng.get("epoch_so_far")  # only a mid-epoch checkpoint has one
        if main and state["epoch"] >= cfg.optim.epochs:  # stopped during the final evaluation
            print(f"resuming {run_dir}: all {cfg.optim.epochs} epochs are trained; running the final evaluation",
                  flush=True)
        elif main:
            print(f"resuming {run_dir} at epoch {state['epoch'] + 1} step {state['step']}", flush=True)
    elif main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "environment.json").write_text(json.dumps(environment_info(rt, cfg), indent=2))
    distributed.barrier()

    net = model
    if cfg.model.sync_bn and rt.device.type != "cuda":
        raise ValueError("model.sync_bn needs GPUs (PyTorch's SyncBatchNorm has no CPU kernel); set it to false")
    if cfg.model.sync_bn and rt.distributed:
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if rt.distributed:
        net = DistributedDataParallel(net, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net, mode=None if cfg.compile_mode == "default" else cfg.compile_mode)

    mean, std = bench.mean, bench.std
    crops_on_load = getattr(bench.train, "crops_on_load", False)
    augment = build_train_augment(cfg.data.augment, mean, std, cfg.data.image_size, shear=cfg.data.autoaugment_shear,
                                  cropped=crops_on_load)
    eval_tf = build_eval_transform(mean, std)
    held = isinstance(bench.train, TensorSplit)
    if held:
        bench.train = bench.train.to(rt.device)
    else:  # one DataLoader for the whole run: its workers start once, not once per epoch
        plan = EpochBatches()
        workers = cfg.data.workers
        loader = DataLoader(bench.train, batch_sampler=plan, num_workers=workers,
                            pin_memory=rt.device.type == "cuda", persistent_workers=workers > 0,
                            multiprocessing_context=distributed.loader_context(workers))
    writer = SummaryWriter(str(run_dir / "tensorboard")) if cfg.tensorboard and main else None

    stop = {"flag": False, "now": None}  # now: the message to stop with at once (final evaluation)
    check_every = cfg.check_every or (1 if rt.device.type == "cpu" else 25)

    def diverged_check(epoch: int, after: int, upto: int) -> None:
        # all ranks decide together, or one rank stops while the others wait in all-reduce
        if distributed.any_rank(bool(nonfinite), rt.device):
            where = f"step {upto}" if upto == after + 1 else f"one of steps {after + 1}-{upto}"
            raise TrainingDiverged(f"the loss became NaN or inf at epoch {epoch + 1}, {where}")

    def request_stop(signum, frame):
        # The loop looks at the flag between steps, on all ranks together (any_rank). In one process a
        # second request, or one while nothing looks at the flag (the final evaluation), stops at once:
        # last.pt is the last checkpoint written either way. Under torchrun the ranks must stop
        # together, so a request there always waits for the next check.
        if not rt.distributed and (stop["now"] or stop["flag"]):
            raise _StopNow(stop["now"] or f"interrupted again before the next checkpoint; continue from the "
                           f"last one with `longtail train --resume {run_dir}`")
        stop["flag"] = True

    def checkpoint(epoch: int, step: int, name: str = "last.pt", so_far: dict | None = None) -> None:
        # every rank's random streams (augmentation, global torch e.g. GCL noise), so each resumes its own;
        # mid-epoch, also its sums over the epoch's steps so far, so that the resumed epoch's log line,
        # train time and images seen are those of an uninterrupted epoch
        mine = {"aug": aug_gen.get_state().cpu(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(rt.device) if rt.device.type == "cuda" else None,
                **({"epoch_so_far": so_far} if so_far else {})}
        rngs = _gather_objects(mine) if rt.distributed else [mine]
        if main:
            atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "loss": criterion.state_dict(), "scaler": scaler.state_dict(),
                         "state": {**state, "epoch": epoch, "step": step}, "rng": rngs,
                         "world_size": rt.world_size, "config": cfg.to_dict()}, run_dir / name)

    old_handlers, log = {}, None
    best_state = None
    progress = Progress(cfg.progress, main)
    watch = RateWatch(torch.get_num_threads(), str(run_dir)) if rt.device.type == "cpu" and main else None
    start_epoch = state["epoch"]
    try:  # from here on, the finally puts the signal handlers back and closes the log
        old_handlers = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        if resume and main:
            trim_metrics_log(run_dir / "metrics.jsonl", state["epoch"])
        log = open(run_dir / "metrics.jsonl", "a" if resume else "w") if main else None
        for epoch in range(start_epoch, cfg.optim.epochs):
            lr = learning_rate(epoch, cfg.optim)
            for group in optimizer.param_groups:
                group["lr"] = lr
            apply_drw(criterion, cfg, epoch, counts)
            start_step = state["step"] if epoch == start_epoch else 0
            if start_step == 0:
                aug_gen.manual_seed(cfg.seed * 1_000_003 + epoch * 101 + rt.rank)
            if cfg.data.sampler == "class_balanced":
                batches = class_balanced_batches(bench.train.labels, cfg.optim.batch_size, epoch, cfg.seed, rt.rank,
                                                 rt.world_size, cfg.optim.drop_last)
            else:
                batches = epoch_batches(len(bench.train), cfg.optim.batch_size, epoch, cfg.seed, rt.rank,
                                        rt.world_size, cfg.optim.drop_last)
            if held:  # the epoch's indices go to the device in one copy, not one per step
                todo = batches[start_step:]
                on_device = torch.cat(todo).to(rt.device).split([len(b) for b in todo]) if todo else []
                source = ((bench.train.images[b], bench.train.labels[b]) for b in on_device)
            else:
                plan.batches = [b.tolist() for b in batches[start_step:]]
                if crops_on_load:  # each image's crop keyed by where it is trained, so a resume repeats it
                    plan.batches = crop_keyed_batches(plan.batches, cfg.seed, epoch, rt.rank, start_step)
                source = loader
            if cfg.optim.mixup_alpha:  # the epoch's pairs go to the device in one copy too
                mixing = mixup_epoch([len(b) for b in batches[start_step:]], cfg.optim.mixup_alpha, cfg.seed,
                                     epoch, start_step, rt.rank, rt.device)
            model.train()
            if cfg.model.freeze_backbone:  # its batch-norm statistics stay as loaded
                model.backbone.eval()
            criterion.train()
            loss_sum = torch.zeros((), device=rt.device)
            correct = torch.zeros((), device=rt.device)
            seen, time_before = 0, 0.0  # images and seconds of this epoch before a resume
            if epoch == start_epoch and resumed_so_far:
                loss_sum += resumed_so_far["loss_sum"].to(rt.device)
                correct += resumed_so_far["correct"].to(rt.device)
                seen, time_before = resumed_so_far["seen"], resumed_so_far["time_s"]
            nonfinite = torch.zeros((), dtype=torch.bool, device=rt.device)  # any bad loss since the last check
            checked = shown = start_step  # the last step whose loss was checked / shown in the progress line
            t0 = time.perf_counter()
            if watch:
                watch.restart()
            step = start_step
            for x, y in source:
                x, y = x.to(rt.device, non_blocking=True), y.to(rt.device, non_blocking=True)
                x = augment(x, aug_gen)
                if cfg.optim.mixup_alpha:
                    lam, perm = mixing[step - start_step]
                    x = mix(x, lam, perm)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast_context(rt.device, precision):
                    logits = net(x)
                logits = logits.float()
                loss = mixed_loss(criterion, logits, y, lam, perm) if cfg.optim.mixup_alpha else criterion(logits, y)
                nonfinite |= ~torch.isfinite(loss.detach())
                if check_every == 1:  # checked before the optimizer step; with larger intervals, after
                    diverged_check(epoch, step, step + 1)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.optim.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                loss_sum += loss.detach() * len(y)
                pred = logits.argmax(1)
                hits = pred == y
                if cfg.optim.mixup_alpha:  # a mixed image counts as lam right for y, 1 - lam for y[perm]
                    hits = lam * hits + (1.0 - lam) * (pred == y[perm])
                correct += hits.sum()
                seen += len(y)
                if watch:
                    watch.update(len(y))
                if step % check_every and step != len(batches):
                    continue
                if check_every > 1:
                    diverged_check(epoch, checked, step)
                checked = step
                if progress.on and step - shown >= 10:  # at most every 10 steps, only where values are read
                    shown = step
                    rate = seen / (time_before + time.perf_counter() - t0)
                    progress.update(f"epoch {epoch + 1}/{cfg.optim.epochs} step {step}/{len(batches)} "
                                    f"loss {loss_sum.item() / seen:.4f} acc {100 * correct.item() / seen:.1f}% "
                                    f"{rate * rt.world_size:.0f} img/s")
                if distributed.any_rank(stop["flag"], rt.device):
                    so_far = {"loss_sum": loss_sum.detach().cpu(), "correct": correct.detach().cpu(), "seen": seen,
                              "time_s": time_before + time.perf_counter() - t0}
                    checkpoint(epoch, step, so_far=so_far)
                    raise TrainingInterrupted(f"interrupted at epoch {epoch + 1} step {step}; a checkpoint "
                                              f"was written: continue with `longtail train --resume {run_dir}`")
            # evaluate, on every rank, the model the checkpoints hold: rank 0's batch-norm statistics
            distributed.broadcast_buffers(model)
            elapsed = time_before + time.perf_counter() - t0
            state["train_time"] += elapsed
            state["images_seen"] += seen * rt.world_size
            record = {"epoch": epoch + 1, "lr": lr, "loss": _global_mean(loss_sum, seen),
                      "train_acc": 100 * _global_mean(correct, seen), "time_s": round(elapsed, 3),
                      "images_per_s": round(seen * rt.world_size / max(elapsed, 1e-9), 1)}
            last_epoch = epoch + 1 == cfg.optim.epochs
            if bench.val is not None and ((epoch + 1) % cfg.eval.every == 0 or last_epoch):
                val_top1 = _top1(predict(model, bench.val, eval_tf, rt.device, precision, cfg.eval.batch_size,
                                         cfg.channels_last, cfg.data.workers))
                record["val_acc"] = val_top1
                if val_top1 > state["best_val"]:
                    state["best_val"], state["best_val_epoch"] = val_top1, epoch + 1
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                    checkpoint(epoch + 1, 0, "best.pt")
                if cfg.eval.track_test and cfg.eval.test:
                    test_top1 = _top1(predict(model, bench.test, eval_tf, rt.device, precision,
                                              cfg.eval.batch_size, cfg.channels_last, cfg.data.workers))
                    record["test_acc_for_best_on_test_figure"] = test_top1
                    if test_top1 > state["best_test"]:
                        state["best_test"], state["best_test_epoch"] = test_top1, epoch + 1
            if main:  # log before the checkpoint: a resume drops log lines the checkpoint does not cover
                log.write(json.dumps(record) + "\n")
                log.flush()
            checkpoint(epoch + 1, 0)
            if main:
                if writer:
                    for k, v in record.items():
                        if k != "epoch":
                            writer.add_scalar(k, v, epoch + 1)
                progress.update(f"epoch {epoch + 1}/{cfg.optim.epochs} loss {record['loss']:.4f} "
                                f"train {record['train_acc']:.1f}% val {record.get('val_acc', float('nan')):.1f}% "
                                f"{record['images_per_s']:.0f} img/s")
                if not progress.on and cfg.progress != "quiet":
                    print(json.dumps(record), flush=True)
            state["epoch"], state["step"] = epoch + 1, 0
        progress.close()
        distributed.barrier()
        stop["now"] = (f"interrupted during the final evaluation; training is finished and in last.pt: "
                       f"`longtail train --resume {run_dir}` runs the evaluation again")
        # asked for during the last epoch's validation, after the last step's check
        if distributed.any_rank(stop["flag"], rt.device):
            raise TrainingInterrupted(stop["now"])
        results = final_evaluation(cfg, run_dir, model, bench, rt, eval_tf, state, best_state, precision)
    except _StopNow as exc:
        raise TrainingInterrupted(str(exc)) from None
    except TrainingDiverged as exc:
        good = run_dir / "last.pt"
        where = (f"the last good checkpoint is {good} (end of epoch {state['epoch']})" if good.exists()
                 else "no checkpoint was written before it")
        raise TrainingDiverged(f"training diverged: {exc}; {where}. Lower optim.lr, use precision=fp32, or "
                               "check the data") from None
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        if log:
            log.close()
        if writer:
            writer.close()
    if main and cfg.progress != "quiet":
        print(report_markdown(results), flush=True)
    distributed.shutdown()
    return run_dir


def check_epoch_has_batches(cfg: Config, bench, rt) -> None:
    """Refuse a run whose epochs would hold no batch (it would "train" nothing and still write results).
    Both samplers make as many draws per epoch as there are training images."""
    if not batches_per_epoch(len(bench.train), cfg.optim.batch_size, rt.world_size, cfg.optim.drop_last):
        raise ConfigError(f"an epoch would hold no batch: optim.batch_size {cfg.optim.batch_size} is larger than "
                          f"the {len(bench.train)} training images and optim.drop_last is true (always so with "
                          "several processes); lower the batch size or set optim.drop_last=false")


def read_resume_checkpoint(run_dir: Path, device) -> dict:
    try:
        return read_checkpoint(run_dir / "last.pt", device)
    except ValueError as exc:
        backup = ("; best.pt is a whole checkpoint too (of the best epoch on validation): copy it over last.pt "
                  "to resume from that epoch" if (run_dir / "best.pt").exists() else "")
        raise ValueError(f"cannot resume: {exc}{backup}") from None


def trim_metrics_log(path: Path, epochs_done: int) -> None:
    """Keep the log lines of the epochs the checkpoint holds. A line cut short (a kill or a full disk
    while it was written) is dropped with a warning: last.pt, not the log, is what the run resumes."""
    keep, broken = [], 0
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []  # bad bytes: a bad line
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            epoch = int(record["epoch"])
        except (ValueError, KeyError, TypeError):
            broken += 1
            continue
        if epoch <= epochs_done:
            keep.append(line)
    if broken:
        print(f"warning: dropped {broken} unreadable line(s) from {path}", file=sys.stderr, flush=True)
    path.write_text("".join(line + "\n" for line in keep))


def _gather_objects(obj):
    out = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def _global_mean(total: torch.Tensor, count: int) -> float:
    t = torch.stack([total.float(), torch.tensor(float(count), device=total.device)])
    if distributed.is_active():
        torch.distributed.all_reduce(t)
    return float(t[0] / max(float(t[1]), 1.0))


def _top1(pred) -> float:
    logits, targets = pred
    return 100.0 * float((logits.argmax(1) == targets).float().mean()) if len(targets) else 0.0


def final_evaluation(cfg: Config, run_dir: Path, model, bench, rt, eval_tf, state: dict, best_state,
                     precision: str) -> dict:
    """Test the best-on-validation and the last checkpoints once; write results.json/.md and the plot."""
    results = {"run": run_dir.name, "dataset": cfg.data.name,
               "imb_factor": cfg.data.imb_factor if cfg.data.name.startswith("cifar") else None,
               "setting": setting_key(cfg), "config": cfg.to_dict(),
               "method": method_name(cfg), "seed": cfg.seed, "epochs": cfg.optim.epochs,
               "train_time_s": round(state["train_time"], 1),
               "train_images_per_s": round(state["images_seen"] / max(state["train_time"], 1e-9), 1),
               "best_val": {"epoch": state["best_val_epoch"], "top1": state["best_val"]},
               **({"first_stage": state["first_stage"]} if state.get("first_stage") else {}),
               "best_test_epoch": ({"epoch": state["best_test_epoch"], "top1": state["best_test"],
                                    "note": "epoch selected on the TEST set, as papers report; not honest"}
                                   if state["best_test_epoch"] else None),
               "environment": made_on(run_dir, rt, cfg, precision),
               "checkpoints": {}}
    if not cfg.eval.test:  # validation figures only (best_val above): the test split is never read
        results["test_evaluated"] = False
        if rt.is_main:
            write_replacing(run_dir / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2)))
        return results
    # The model in memory is the last state; the best-on-validation weights were kept in memory when
    # found (every rank has them: validation accuracy is gathered), or come from best.pt after a resume.
    results["checkpoints"]["last"] = evaluate_model(model, bench, cfg, rt.device, eval_tf, precision)
    if best_state is None and (run_dir / "best.pt").exists():
        best_state = read_checkpoint(run_dir / "best.pt", "cpu")["model"]
    if best_state is not None:
        model.load_state_dict(best_state)
        results["checkpoints"] = {"best_val": evaluate_model(model, bench, cfg, rt.device, eval_tf, precision),
                                  **results["checkpoints"]}
    if rt.is_main:
        from longtail.report import plot_per_class, run_title  # matplotlib: only when a run ends

        (run_dir / "results.md").write_text(f"# {run_title(results)}\n\n" + report_markdown(results))
        chosen = results["checkpoints"].get("best_val") or results["checkpoints"]["last"]
        plot_per_class({"raw": chosen["raw"]["per_class"], **({"PR (tau on val)": chosen["pr"]["per_class"]}
                                                                if "pr" in chosen else {})},
                       bench.class_counts, run_dir / "per_class.png", title=run_title(results))
        # last, and whole or not at all: results.json marks a finished run (resume refuses it)
        write_replacing(run_dir / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2)))
    return results


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


def make_optimizer(params, optim, precision: str) -> torch.optim.SGD:
    """SGD with the recipe's lr, momentum, Nesterov flag and weight decay. Under fp16 it is torch's
    fused SGD: GradScaler then hands it the overflow flag as a device tensor, where with the default
    (foreach) SGD it reads the flag back to the host at every step, a wait for the GPU. The updates
    are the same (tested)."""
    return torch.optim.SGD(params, lr=optim.lr, momentum=optim.momentum, nesterov=optim.nesterov,
                           weight_decay=optim.weight_decay, **({"fused": True} if precision == "fp16" else {}))


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """optimizer.load_state_dict, keeping the kernel choice (fused / foreach) this run made: a
    checkpoint's param groups carry the choice of the version that saved it, and an fp16 run saved
    before the fused SGD would otherwise resume with GradScaler handing the overflow flag to an
    optimizer that no longer takes it."""
    optimizer.load_state_dict(saved)
    for group in optimizer.param_groups:
        for key in ("fused", "foreach"):
            if key in optimizer.defaults:
                group[key] = optimizer.defaults[key]


RESUME_OVERRIDABLE = ("threads", "progress", "eval.batch_size", "data.workers", "tensorboard", "check_every")


def resume_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The resolved config saved in a run folder, with runtime-only overrides (see RESUME_OVERRIDABLE)."""
    from longtail.config import ConfigError, load_config, parse_override

    run_dir = Path(run_dir)
    if not (run_dir / "last.pt").exists():
        raise FileNotFoundError(f"{run_dir} has no last.pt checkpoint to resume from")
    if (run_dir / "results.json").exists():  # written only when a run has trained and been evaluated
        raise FileExistsError(f"{run_dir} is finished (it holds results.json); nothing to resume. "
                              f"`longtail eval {run_dir}` evaluates it again")
    for text in overrides or []:
        key = ".".join(parse_override(text)[0])
        if key not in RESUME_OVERRIDABLE:
            raise ConfigError(f"{key} cannot change on --resume (it would change the result); only "
                              f"{', '.join(RESUME_OVERRIDABLE)} can")
    return load_config(run_dir / "config.yaml", overrides, saved=True)


__all__ = ["train", "learning_rate", "epoch_batches", "atomic_save", "TrainingDiverged", "TrainingInterrupted",
           "CheckpointWriteError", "resume_config", "method_name", "setting_key", "started_precision", "run_precision"]
