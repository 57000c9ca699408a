"""How many device operations (aten ops: on a GPU, roughly one kernel launch each) one training
batch costs in each part of the CIFAR GALA step, counted on CPU with a dispatch mode.

    python benchmarks/op_count.py [--batch 64] [--out FILE]

On a GPU, ResNet-32 at batch 64 is launch-bound: with compile_mode=reduce-overhead the network's
forward and backward replay as one CUDA graph, so what stays eager (the augmentation, the loss,
SGD) sets the pace. The sync-free augmentation (the GPU default) runs every AutoAugment operation on
the whole batch, so it launches more than the grouped CPU form.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from longtail import losses
from longtail.data import augment as A
from longtail.models import build_model


class OpCount(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def count(fn) -> int:
    fn()  # the first call makes what is kept (constants, momentum buffers)
    mode = OpCount()
    with mode:
        fn()
    return mode.n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 3, 32, 32), dtype=torch.uint8)
    lines = [f"$ python {' '.join(sys.argv)}", f"torch {torch.__version__}, batch {args.batch}, CIFAR 32x32", "",
             "| part of the step | aten ops per batch |", "|---|---|"]
    for kind in ("crop_flip", "autoaugment"):
        for sync_free in (False, True):
            aug = A.build_train_augment(kind, (0.5,) * 3, (0.25,) * 3, 32, sync_free=sync_free)
            gen = torch.Generator().manual_seed(0)
            form = "sync-free (GPU default)" if sync_free else "grouped (CPU default)"
            lines.append(f"| augmentation {kind}, {form} | {count(lambda: aug(x, gen))} |")
    model = build_model("resnet32", num_classes=100, in_channels=3)
    crit = losses.build("gala", class_counts=list(range(100, 0, -1)), check_values=False).train()
    # foreach=True: what SGD picks by default for CUDA tensors (on CPU tensors it loops per parameter)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=True)
    xb, y = torch.randn(args.batch, 3, 32, 32), torch.arange(args.batch) % 100
    logits = model(xb).detach().requires_grad_()

    def net_step():
        out = model(xb)
        out.sum().backward()

    def loss_step():
        crit(logits, y).backward()

    lines.append(f"| ResNet-32 forward + backward (one CUDA graph under reduce-overhead) | {count(net_step)} |")
    lines.append(f"| GALA loss (reference) forward + backward, statistics update | {count(loss_step)} |")
    lines.append(f"| SGD step (momentum, weight decay; foreach, as on a GPU) | {count(opt.step)} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
