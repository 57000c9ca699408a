"""Cost of each batched augmentation kind against a ResNet-32 training step, on CPU.

    python benchmarks/augment_cost.py [--threads 2] [--batch 64] [--out FILE]

Times a batch of 64 uint8 32x32 CIFAR-sized images through build_train_augment(kind) and one
ResNet-32 (100 classes) SGD step (forward + backward + step) in fp32 and in bf16 autocast with
channels_last, all in the same run; prints each augmentation's cost as a fraction of the steps.
Median of repeated timings after warm-up. Target: "autoaugment" under 15% of the fp32 step.

    python benchmarks/augment_cost.py --large [--batch 64] [--reps 5]

instead times the list-dataset batch step at 224 x 224 (images cropped as they were decoded):
"imagenet" (flip, jitter) and "imagenet_randaugment" (flip, jitter as on PIL images, RandAugment),
against one fp32 ResNet-50 (1000 classes) SGD step on the same batch size, in the same run.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from longtail.data.augment import AUGMENTS, build_train_augment
from longtail.models import build_model

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def timeit(fn, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=None)
    ap.add_argument("--append", action="store_true", help="append to --out instead of overwriting")
    ap.add_argument("--large", action="store_true", help="224x224 list-dataset recipes against a ResNet-50 step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.large:
        return large(args)
    b = args.batch
    images = torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 100, (b,))
    lines = _header(args)

    steps = {}
    for mode in ("fp32", "bf16+channels_last"):
        model = build_model("resnet32", 100)
        fmt = torch.channels_last if mode != "fp32" else torch.contiguous_format
        model = model.to(memory_format=fmt)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        x = torch.randn(b, 3, 32, 32).contiguous(memory_format=fmt)

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
                loss = F.cross_entropy(model(x), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        steps[mode] = timeit(step, 3, max(5, args.reps // 2))
        lines.append(f"resnet32 train step [{mode}]: {steps[mode] * 1e3:8.2f} ms")

    g = torch.Generator().manual_seed(0)
    lines.append(f"{'augment':>22s} {'ms/batch':>9s} {'/ fp32 step':>12s} {'/ bf16 step':>12s}")
    # "+sync-free": the GPU default (every op on every image, no host reads), timed here on CPU only
    # to show what it would cost if the CPU used it (it does not: grouped is the CPU default).
    for kind in AUGMENTS:
        for sync_free in (False, True):
            if sync_free and kind in ("none", "crop_flip"):
                continue  # nothing to group: the same code either way
            aug = build_train_augment(kind, MEAN, STD, 32, sync_free=sync_free)
            t = timeit(lambda: aug(images, g), 3, args.reps)
            name = kind + ("+sync-free" if sync_free else "")
            lines.append(f"{name:>22s} {t * 1e3:9.2f} {t / steps['fp32']:11.1%} "
                         f"{t / steps['bf16+channels_last']:11.1%}")
    # Image files crop in the DataLoader workers as they decode under the "imagenet" recipes
    # (load_benchmark builds bench.augment with cropped=True), so the batch step is "imagenet"
    # without its crop: flip, colour jitter, normalise.
    aug = build_train_augment("imagenet", MEAN, STD, 32, cropped=True)
    t = timeit(lambda: aug(images, g), 3, args.reps)
    lines.append(f"{'imagenet+cropped':>22s} {t * 1e3:9.2f} {t / steps['fp32']:11.1%} "
                 f"{t / steps['bf16+channels_last']:11.1%}")
    report(lines, args)


def _header(args) -> list[str]:
    return [f"$ python {' '.join(sys.argv)}",
            f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
            f"threads={torch.get_num_threads()}, batch={args.batch}, median of {args.reps}, "
            f"load average at start {os.getloadavg()[0]:.1f} (other jobs on the machine inflate the step times)"]


def report(lines: list[str], args) -> None:
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a" if args.append else "w") as f:
            f.write(text + "\n")


def large(args) -> None:
    b, size = args.batch, 224
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    # smooth images (upsampled noise), so autocontrast, equalize and the filters see image-like data
    images = F.interpolate(torch.rand(b, 3, 14, 14) * 255, size=(size, size), mode="bilinear").round().to(torch.uint8)
    lines = _header(args)
    model = build_model("resnet50", 1000)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, labels = torch.randn(b, 3, size, size), torch.randint(0, 1000, (b,))

    def step():
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    base = timeit(step, 1, args.reps)  # the header's 'median of' holds for the step too
    lines.append(f"resnet50 train step [fp32], {size}x{size}: {base * 1e3:9.1f} ms")
    lines.append(f"{'augment (cropped on decoding)':>32s} {'ms/batch':>9s} {'/ fp32 step':>12s}")
    g = torch.Generator().manual_seed(0)
    for kind in ("imagenet", "imagenet_randaugment"):
        aug = build_train_augment(kind, mean, std, size, cropped=True)
        t = timeit(lambda: aug(images, g), 2, args.reps)
        lines.append(f"{kind:>32s} {t * 1e3:9.1f} {t / base:11.1%}")
    report(lines, args)


if __name__ == "__main__":
    main()
