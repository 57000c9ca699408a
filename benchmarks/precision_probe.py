"""Is bf16 faster than fp32 for ResNet-32 training on this CPU? Model step only (no data, no loss
beyond cross-entropy), so precision and memory format are the only differences.

    python benchmarks/precision_probe.py [--threads 2] [--steps 8] [--out FILE]

Paths, each at batch 64 and 128: fp32 and bf16 autocast, contiguous and channels_last, and the
whole model in bf16 (weights too; not a training recipe, only an upper bound on what bf16 kernels
give here). Images/s as ratios against fp32 contiguous at the same batch, measured in one run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

from longtail.evaluation import resolve_precision
from longtail.models import build_model


def rate(batch: int, mode: str, channels_last: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model("resnet32", num_classes=100)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 100, (batch,))
    if mode == "bf16 weights":
        model, x = model.to(torch.bfloat16), x.to(torch.bfloat16)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16 autocast"):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    isa = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    model_name = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")),
                      "unknown CPU")
    lines = [f"$ python {' '.join(sys.argv)}", f"CPU: {model_name}; longtail's precision auto picks "
             f"{resolve_precision('auto', torch.device('cpu'))} here",
             f"torch {torch.__version__}, threads={torch.get_num_threads()}, CPU flags present: {', '.join(isa) or 'none'}, "
             f"load average at start {os.getloadavg()[0]:.2f}",
             "| batch | precision | memory format | images/s | vs fp32 contiguous |", "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for batch in (64, 128):
        base = None
        for mode in ("fp32", "bf16 autocast", "bf16 weights"):
            for cl in (False, True):
                r = rate(batch, mode, cl, args.steps)
                base = base or r
                lines.append(f"| {batch} | {mode} | {'channels_last' if cl else 'contiguous'} | {r:.0f} | {r / base:.2f}x |")
                print(lines[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
