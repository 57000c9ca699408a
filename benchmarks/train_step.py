"""Images/s of the CIFAR-100-LT ResNet-32 GALA training step: the released code's path vs ours.

    python benchmarks/train_step.py [--data-root ../shared/data] [--no-verify] [--device cpu|cuda] [--threads 2]
        [--workers 2] [--steps 10] [--warmup 3] [--check] [--profile] [--out FILE]

One process, the real CIFAR-100-LT IF100 training images (longtail.data.load_benchmark), batch 64,
SGD (momentum 0.9, weight decay 5e-4), the GALA recipe's augmentation (random crop 32 pad 4, flip,
CIFAR-10 AutoAugment, Cutout 16), longtail's resnet32 in every path, so only the path differs:

  baseline (wN)   the released GALA code's path (benchmarks/_released_baseline.py): a DataLoader with
                  N workers over uint8 HWC numpy images, PER-IMAGE PIL transforms, fp32, contiguous,
                  GALA statistics from the released per-sample Python loop (running C x C matrix).
  ours fp32       longtail.train's path: the split held as one uint8 tensor, batches by index,
                  batched tensor augmentation (build_train_augment("autoaugment")), vectorised GALA.
  ours default    the same with longtail's defaults: precision=auto (bf16 autocast on GPUs, AMX CPUs
                  and AMD CPUs with AVX512-BF16, else fp32) + channels_last.
  ours default+compile   the same with torch.compile(model); compile time reported apart.
  ours ... reduce-overhead   compile mode "reduce-overhead" (CUDA graphs: the whole forward and
                  backward replayed with one launch), CUDA only; config `compile_mode=reduce-overhead`.

Each timed step is what a training step really costs: fetching the batch (DataLoader / index),
augmentation, forward, loss (with the GALA statistics update), backward, optimizer step, and the
per-step bookkeeping each loop does (the released loop's loss.item()/accuracy, ours' finiteness
checks and running sums). Warm-up steps first (they include DataLoader worker start-up and
compilation), then `--steps` steps timed with time.perf_counter (device synchronised on CUDA).
`--check` asserts that the baseline and ours compute the same GALA loss and statistics on the same
un-augmented batches from the same weights in fp32 (3 consecutive SGD steps, "reference" mode).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import getpass
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _released_baseline import (  # noqa: E402
    NumpyImageDataset,
    ReleasedGALA,
    released_eval_transform,
    released_train_transform,
)

from longtail import losses  # noqa: E402
from longtail.config import DataConfig  # noqa: E402
from longtail.data import load_benchmark  # noqa: E402
from longtail.data.augment import build_eval_transform, build_train_augment  # noqa: E402
from longtail.data.sampling import epoch_batches  # noqa: E402
from longtail.evaluation import autocast_context, resolve_precision  # noqa: E402
from longtail.models import build_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LR, MOMENTUM, WD = 0.05, 0.9, 5e-4


def default_data_root() -> str:
    for p in (Path("/work/shared/data"), REPO.parent / "shared" / "data"):
        if (p / "cifar-100-python").exists():
            return str(p)
    return str(REPO.parent / "shared" / "data")


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def new_model(num_classes: int, dev: torch.device, channels_last: bool = False):
    torch.manual_seed(0)  # same initial weights in every path
    model = build_model("resnet32", num_classes).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)


# ----------------------------------------------------------------------------- the two paths

class BaselinePath:
    """The released code's training step (see _released_baseline.py)."""

    def __init__(self, bench, dev, batch: int, workers: int):
        self.dev = dev
        c = bench.num_classes
        self.model = new_model(c, dev)
        self.crit = ReleasedGALA(c).to(dev)
        self.opt = sgd(self.model)
        hwc = bench.train.images.permute(0, 2, 3, 1).contiguous().numpy()  # uint8 (N, 32, 32, 3)
        ds = NumpyImageDataset(hwc, bench.train.labels.tolist(), released_train_transform(bench.mean, bench.std))
        self.loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                                 pin_memory=dev.type == "cuda")
        self.it = self._batches()
        self.model.train()
        self.crit.train()

    def _batches(self):
        while True:  # a new epoch re-creates the iterator (and restarts workers), as the released loop does
            yield from self.loader

    def step(self) -> None:
        x, y = next(self.it)
        x, y = x.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
        logits = self.model(x)
        loss = self.crit(logits, y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        # the released loop's per-step meters: loss.item() and top-1 of the batch
        self.last = (loss.item(), (logits.argmax(1) == y).sum().item())


class OursPath:
    """longtail.train's loader and step (longtail.data.loader.TrainLoader, longtail.train.train_step),
    statement for statement (no DDP, no grad clip, no GradScaler: fp32/bf16 only), with timing marks
    between the phases: the loss is checked for NaN/inf every step on CPU, every 25 steps on GPU
    (check_every=0, auto)."""

    def __init__(self, bench, dev, batch: int, precision: str, channels_last: bool, compile_model: bool,
                 gala_mode: str, compile_mode: str = "default"):
        self.dev, self.precision, self.channels_last, self.batch = dev, precision, channels_last, batch
        c = bench.num_classes
        self.model = new_model(c, dev, channels_last)
        # as train.py builds it: the trainer checks the loss itself, so the loss skips its logits check
        self.crit = losses.build("gala", class_counts=bench.class_counts, lambda1=1.2, lambda2=0.9,
                                 mode=gala_mode, check_values=False).to(dev)
        self.opt = sgd(self.model)
        self.net = (torch.compile(self.model, mode=None if compile_mode == "default" else compile_mode)
                    if compile_model else self.model)
        self.check_every = 1 if dev.type == "cpu" else 25
        self.steps = 0
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=dev)
        self.train = bench.train.to(dev)
        self.augment = build_train_augment("autoaugment", bench.mean, bench.std, 32)
        self.gen = torch.Generator(device=dev).manual_seed(0)
        self.it = self._batches()
        self.model.train()
        self.crit.train()
        self.loss_sum = torch.zeros((), device=dev)
        self.correct = torch.zeros((), device=dev)
        self.timing = None  # {phase: [seconds]} when phase timing is on

    def _batches(self):
        epoch = 0
        while True:
            batches = epoch_batches(len(self.train), self.batch, epoch, seed=0)
            for b in torch.cat(batches).to(self.dev).split([len(b) for b in batches]):
                yield self.train.images[b], self.train.labels[b]
            epoch += 1

    def _mark(self, name: str, t: float) -> float:
        if self.timing is None:
            return t
        sync(self.dev)
        now = time.perf_counter()
        self.timing.setdefault(name, []).append(now - t)
        return now

    def step(self) -> None:
        t = time.perf_counter()
        x, y = next(self.it)
        x, y = x.to(self.dev, non_blocking=True), y.to(self.dev, non_blocking=True)
        t = self._mark("batch by index", t)
        x = self.augment(x, self.gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t = self._mark("augment (batched)", t)
        with autocast_context(self.dev, self.precision):
            logits = self.net(x)
        logits = logits.float()
        t = self._mark("forward", t)
        loss = self.crit(logits, y)
        self.nonfinite |= ~torch.isfinite(loss.detach())
        self.steps += 1
        if self.steps % self.check_every == 0 and bool(self.nonfinite):
            raise RuntimeError("non-finite loss")
        t = self._mark("GALA loss + statistics", t)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        t = self._mark("backward", t)
        self.opt.step()
        t = self._mark("optimizer step", t)
        self.loss_sum += loss.detach() * len(y)
        self.correct += (logits.argmax(1) == y).sum()
        self._mark("bookkeeping", t)


def time_path(path, warmup: int, steps: int, dev: torch.device) -> dict:
    first = None
    for i in range(warmup):
        t = time.perf_counter()
        path.step()
        sync(dev)
        if i == 0:
            first = time.perf_counter() - t
    # On a GPU, steps are queued back to back as in training (one sync at the end); a sync after
    # every step would charge each path for an idle device while the host queues the next step.
    per_step = []
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        t = time.perf_counter()
        path.step()
        if dev.type == "cpu":
            per_step.append(time.perf_counter() - t)
    sync(dev)
    elapsed = time.perf_counter() - t0
    median = statistics.median(per_step) if per_step else (elapsed / steps if steps else float("nan"))
    return {"elapsed": elapsed, "first": first, "median": median, "steps": steps}


# ----------------------------------------------------------------------------- --check

def check_same_work(bench, dev, batch: int, lines: list[str]) -> None:
    """Same weights, same un-augmented batches, fp32: baseline and ours give the same GALA loss, the
    same gradients and the same statistics, over 3 consecutive SGD steps ("reference" mode: the
    released algorithm). Ours is re-loaded with the baseline's weights before every step: early
    training at this learning rate is chaotic, so two copies stepped apart drift from rounding alone.
    On a GPU the check runs in true fp32 with deterministic cuDNN: by default convolutions there round
    to TF32 (10-bit mantissa) and may pick non-deterministic algorithms; with those defaults the check
    failed on an H200 at 9.4e-4 relative gradient difference; with these settings it passed there
    (gradients within 7.2e-6)."""
    with exact_fp32(dev):
        _check_same_work(bench, dev, batch, lines)


@contextlib.contextmanager
def exact_fp32(dev: torch.device):
    if dev.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def _check_same_work(bench, dev, batch: int, lines: list[str]) -> None:
    c = bench.num_classes
    m_base = new_model(c, dev)
    m_ours = copy.deepcopy(m_base)
    c_base = ReleasedGALA(c).to(dev)
    c_ours = losses.build("gala", class_counts=bench.class_counts, lambda1=1.2, lambda2=0.9, mode="reference").to(dev)
    o_base = sgd(m_base)
    tf_base = released_eval_transform(bench.mean, bench.std)
    tf_ours = build_eval_transform(bench.mean, bench.std)
    hwc = bench.train.images.permute(0, 2, 3, 1).contiguous().numpy()
    for s in range(3):
        idx = torch.arange(s * batch, (s + 1) * batch) * 37 % len(bench.train)  # spread over classes
        y = bench.train.labels[idx].to(dev)
        x_base = torch.stack([tf_base(Image.fromarray(hwc[i])) for i in idx.tolist()]).to(dev)
        x_ours = tf_ours(bench.train.images[idx].to(dev))
        assert torch.allclose(x_base, x_ours, atol=1e-5), "input pipelines disagree on un-augmented images"
        m_ours.load_state_dict(m_base.state_dict())
        out = []
        # Both steps take the same input tensor: the two pipelines' inputs agree to 1 ulp (asserted
        # above), but a freshly initialised 32-layer net amplifies a 1-ulp input difference into
        # ~1e-3 relative gradient differences, which would hide what this check is about.
        for m, crit, x in ((m_base, c_base, x_base), (m_ours, c_ours, x_base)):
            m.train()
            crit.train()
            m.zero_grad(set_to_none=True)
            loss = crit(m(x), y)
            loss.backward()
            out.append(loss.item())
        lb, lo = out
        assert abs(lb - lo) <= 1e-5 * abs(lb) + 1e-6, f"step {s + 1}: baseline loss {lb!r} != ours {lo!r}"
        gdiff = max(float((a.grad - b.grad).abs().max() / b.grad.abs().max().clamp(min=1e-12))
                    for a, b in zip(m_base.parameters(), m_ours.parameters()))
        assert gdiff < 1e-4, f"step {s + 1}: gradients differ (max relative {gdiff:.1e})"
        o_base.step()
        rel = max(float(((c_base.pos_grad - c_ours.theta).abs() / c_ours.theta.clamp(min=1e-12)).max()),
                  float(((c_base.neg_grad - c_ours.phi).abs() / c_ours.phi.clamp(min=1e-12)).max()))
        assert rel < 1e-5, f"step {s + 1}: GALA statistics differ (max relative {rel:.1e})"
        lines.append(f"check step {s + 1}: loss baseline {lb:.7f} ours {lo:.7f} (|diff| {abs(lb - lo):.1e}); "
                     f"gradients max rel diff {gdiff:.1e}; theta/phi max rel diff {rel:.1e}")
    lines.append("check passed: same inputs, same GALA loss, gradients and statistics -- the same work")


# ----------------------------------------------------------------------------- --profile

def profile_ours(bench, dev, batch, args, lines: list[str]) -> None:
    """Per-phase wall time of ours default (and fp32), then torch.profiler's top ops of one step."""
    for label, prec, cl in (("ours fp32", "fp32", False), ("ours default (bf16+channels_last)", "bf16", True)):
        p = OursPath(bench, dev, batch, prec, cl, False, args.gala_mode)
        for _ in range(2):
            p.step()
        p.timing = {}
        for _ in range(args.profile_steps):
            p.step()
        total = sum(statistics.median(v) for v in p.timing.values())
        lines.append(f"phase breakdown, {label}: median ms over {args.profile_steps} steps (synchronised per phase)")
        for k, v in p.timing.items():
            m = statistics.median(v)
            lines.append(f"    {k:<26s} {m * 1e3:9.1f} ms  {m / total:6.1%}")
        p.timing = None
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(2):
                p.step()
        key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=40)
        lines.append(f"torch.profiler, {label}, 2 steps, top ops by self time:")
        lines.extend("    " + ln for ln in table.splitlines())


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=default_data_root())
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--no-verify", dest="verify", action="store_false",
                    help="skip the official MD5 check (a copy made by benchmarks/device_data.py, checked there)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="baseline DataLoader workers (0 is also reported)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per path")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per path first")
    ap.add_argument("--gala-mode", default="reference", choices=("reference", "paper"),
                    help="GALA mode of ours (reference = the released algorithm; same cost either way)")
    ap.add_argument("--paths", default=None,
                    help="comma list of: base (wN), base0 (0 workers), fp32, fp32cl, default, bf16, compile, graphs "
                         "(compile mode reduce-overhead: CUDA graphs); default: all but graphs on CPU, all on CUDA")
    ap.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=None,
                    help="time the paths round robin, one step each per round (CPU default; robust to load "
                         "from other jobs), or one path after another (--no-interleave; CUDA default, so "
                         "steps queue without a sync between them)")
    ap.add_argument("--check", action="store_true", help="assert baseline and ours compute the same loss first")
    ap.add_argument("--profile", action="store_true", help="phase breakdown + torch.profiler of ours")
    ap.add_argument("--profile-steps", type=int, default=4)
    ap.add_argument("--out", default=None, help="also write the output to this file (command at the top)")
    args = ap.parse_args(argv)
    if args.warmup < 1:  # without one, the first step's start-up/compilation is timed (and its report fails)
        ap.error("--warmup must be at least 1: the first step (DataLoader workers starting, torch.compile "
                 "compiling) must stay out of the timed steps")
    if args.steps < 1:
        ap.error("--steps must be at least 1")

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if args.paths is None:
        args.paths = "base,base0,fp32,default,bf16,compile" + (",graphs" if dev.type == "cuda" else "")
    if args.interleave is None:
        args.interleave = dev.type == "cpu"
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    lines: list[str] = []

    def emit(s: str = "") -> None:
        lines.append(s)
        print(s, flush=True)

    emit(f"$ python {' '.join(sys.argv)}")
    emit(f"start: {uptime()}")
    cpu = platform.processor() or platform.machine()
    emit(f"torch {torch.__version__}, python {platform.python_version()}, {cpu}, {os.cpu_count()} cores, "
         f"threads={torch.get_num_threads()}, device={dev}"
         + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    t = time.perf_counter()
    bench = load_benchmark(DataConfig(name="cifar100-lt", root=args.data_root, verify=args.verify))
    emit(f"data: CIFAR-100-LT IF100 from {args.data_root}: {len(bench.train)} training images, "
         f"{bench.num_classes} classes (loaded in {time.perf_counter() - t:.1f} s); batch {args.batch}, "
         f"SGD lr {LR} momentum {MOMENTUM} wd {WD}; augmentation crop 32 pad 4 + flip + AutoAugment CIFAR-10 + "
         f"Cutout 16; GALA ours mode={args.gala_mode}")
    emit(f"timing: {args.warmup} warm-up steps, then {args.steps} timed steps per path, wall clock, "
         + ("round robin (one step of each path per round)" if args.interleave else "one path after another"))

    if args.check:
        buf: list[str] = []
        check_same_work(bench, dev, args.batch, buf)
        for ln in buf:
            emit(ln)

    wanted = [p.strip() for p in args.paths.split(",") if p.strip()]
    # longtail's default precision ("auto"): bf16 on GPUs and on the CPUs where it was measured faster
    # (longtail.evaluation.bf16_is_fast), fp32 elsewhere
    default_precision = resolve_precision("auto", dev)
    specs = {
        "base": (f"baseline: released path, {args.workers} workers", lambda: BaselinePath(bench, dev, args.batch, args.workers)),
        "base0": ("baseline: released path, 0 workers", lambda: BaselinePath(bench, dev, args.batch, 0)),
        "fp32": ("ours fp32", lambda: OursPath(bench, dev, args.batch, "fp32", False, False, args.gala_mode)),
        "default": (f"ours default ({default_precision} + channels_last)",
                    lambda: OursPath(bench, dev, args.batch, default_precision, True, False, args.gala_mode)),
        "fp32cl": ("ours fp32 + channels_last",
                   lambda: OursPath(bench, dev, args.batch, "fp32", True, False, args.gala_mode)),
        "bf16": ("ours bf16 + channels_last",
                 lambda: OursPath(bench, dev, args.batch, "bf16", True, False, args.gala_mode)),
        "compile": (f"ours default ({default_precision} + channels_last) + torch.compile",
                    lambda: OursPath(bench, dev, args.batch, default_precision, True, True, args.gala_mode)),
        "graphs": (f"ours default ({default_precision} + channels_last) + compile reduce-overhead",
                   lambda: OursPath(bench, dev, args.batch, default_precision, True, True, args.gala_mode,
                                    "reduce-overhead")),
    }
    cache_dir = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or f"/tmp/torchinductor_{getpass.getuser()}")
    cache_warm = cache_dir.is_dir() and any(cache_dir.iterdir())
    results = {}
    if not args.interleave:
        for key in wanted:
            label, make = specs[key]
            try:
                path = make()
                r = time_path(path, args.warmup, args.steps, dev)
                del path
                gc.collect()  # the batch generators hold a cycle: free DataLoader workers now
            except Exception as exc:  # noqa: BLE001  (compile may fail on some machines: say why, go on)
                emit(f"{label}: FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                traceback.print_exc()
                continue
            results[key] = (label, r)
            emit(f"  done {label}: {r['elapsed']:.1f} s for {r['steps']} steps, first step {r['first']:.2f} s "
                 f"(load now {os.getloadavg()[0]:.2f})")
    else:
        # Round robin: every path is built and warmed up, then each round times one step of every
        # path in turn, so load from other jobs on a shared machine hits all paths alike. (The
        # baseline's DataLoader workers keep prefetching while the other paths run: that favours
        # the baseline and slows ours, so the ratios are if anything conservative.)
        live = {}
        for key in wanted:
            label, make = specs[key]
            try:
                path = make()
                r = time_path(path, args.warmup, 0, dev)
            except Exception as exc:  # noqa: BLE001
                emit(f"{label}: FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                traceback.print_exc()
                continue
            live[key] = (label, path, {"first": r["first"], "times": []})
            emit(f"  warmed up {label}: first step {r['first']:.2f} s (load now {os.getloadavg()[0]:.2f})")
        for _ in range(args.steps):
            for key, (label, path, acc) in live.items():
                sync(dev)
                t = time.perf_counter()
                path.step()
                sync(dev)
                acc["times"].append(time.perf_counter() - t)
        for key, (label, path, acc) in live.items():
            results[key] = (label, {"elapsed": sum(acc["times"]), "first": acc["first"],
                                    "median": statistics.median(acc["times"]), "steps": len(acc["times"])})
        live.clear()
        gc.collect()

    emit("")
    base_key = "base" if "base" in results else ("base0" if "base0" in results else None)
    base_rate = args.batch * results[base_key][1]["steps"] / results[base_key][1]["elapsed"] if base_key else None
    emit(f"| {'path':<42s} | {'images/s':>9s} | {'vs baseline':>11s} | {'ms/step':>8s} | {'median ms':>9s} |")
    emit(f"|{'-' * 44}|{'-' * 11}|{'-' * 13}|{'-' * 10}|{'-' * 11}|")
    for key, (label, r) in results.items():
        rate = args.batch * r["steps"] / r["elapsed"]
        ratio = f"{rate / base_rate:10.2f}x" if base_rate else "-"
        emit(f"| {label:<42s} | {rate:9.1f} | {ratio:>11s} | {1e3 * r['elapsed'] / r['steps']:8.1f} | "
             f"{1e3 * r['median']:9.1f} |")
    if "compile" in results:
        r = results["compile"][1]
        extra = r['first'] - r['median']
        emit(f"torch.compile: first step (compilation + one step) {r['first']:.1f} s, i.e. about "
             f"{extra:.1f} s of compile time{' (none visible: served from the cache)' if extra <= 0 else ''}, "
             "excluded from the rate "
             f"(inductor's on-disk cache {'was already populated by an earlier run: a cold compile takes longer' if cache_warm else 'was empty: a cold compile'})")
    if base_key and "default" in results:
        rate = args.batch * results["default"][1]["steps"] / results["default"][1]["elapsed"]
        ok = rate / base_rate >= 3
        emit(f"target (ours default >= 3x the baseline's images/s): {'MET' if ok else 'NOT MET'} "
             f"({rate / base_rate:.2f}x)")

    if args.profile:
        emit("")
        buf = []
        profile_ours(bench, dev, args.batch, args, buf)
        for ln in buf:
            emit(ln)
    emit(f"end: {uptime()}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
