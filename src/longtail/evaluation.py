"""Evaluate a trained model: logits over a split, then raw and post-hoc metrics.

Every post-hoc tau is chosen on the validation split. The paper's transductive prediction
re-balancing (class marginal taken on the test set itself, published tau) is reported beside
the honest numbers and labelled so.
"""
from __future__ import annotations

import contextlib

import torch

from longtail import distributed, metrics, posthoc
from longtail.data.loader import eval_batches


def bf16_is_fast(cpuinfo: str) -> bool:
    """Whether bf16 autocast trains ResNet-32 faster than fp32 on the CPU that `cpuinfo` (the text
    of /proc/cpuinfo) describes. Model step measured by `python benchmarks/precision_probe.py`
    (2 threads, batch 64, channels_last), bf16 autocast against fp32; see docs/RESULTS.md, Speed:
    - AMD EPYC with AVX512-BF16 (no AMX): 1.58x (523 vs 331 images/s; 1.36x in an earlier probe);
      the whole GALA training step 1.35x (`python benchmarks/train_step.py`);
    - Intel Xeon with AVX512-BF16 but no AMX: 0.88x (272 vs 309 images/s); its batch-norm backward
      and dtype casts cost more than its bf16 convolutions save;
    - Intel Xeon with AMX: not probed side by side, but its bf16 runs trained at about 480 images/s
      per run (two at once) where fp32 runs on the machine above made about 250.
    So AMX, or AVX512-BF16 on AMD; fp32 everywhere else, including unknown CPUs."""
    flags: set[str] = set()
    amd = False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags":
            flags.update(value.split())
        elif key == "vendor_id":
            amd = amd or value.strip() == "AuthenticAMD"
    return "amx_bf16" in flags or (amd and "avx512_bf16" in flags)


def _cpu_bf16_is_fast() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return bf16_is_fast(f.read())
    except OSError:
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto": bf16 autocast on GPUs and on CPUs where it was measured faster (see `bf16_is_fast`);
    fp32 elsewhere. A resumed run keeps the precision it started with (`longtail.train`)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and _cpu_bf16_is_fast() else "fp32"


def autocast_context(device: torch.device, precision: str):
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _num_classes(model) -> int:
    head = getattr(getattr(model, "module", model), "head", None)
    if head is None or not hasattr(head, "weight"):
        raise ValueError("predict: a rank got no samples and the model has no `head.weight` to size its output")
    return head.weight.shape[0]


@torch.no_grad()
def predict(model, split, transform, device: torch.device, precision: str = "fp32", batch_size: int = 512,
            channels_last: bool = False, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, CPU) and labels for every sample of `split`, in split order.

    Under torchrun each rank predicts every world_size-th sample and the results are gathered,
    so every sample is counted exactly once.
    """
    was_training = model.training
    model.eval()
    rank = torch.distributed.get_rank() if distributed.is_active() else 0
    world = torch.distributed.get_world_size() if distributed.is_active() else 1
    index = torch.arange(rank, len(split), world)
    outs, labels = [], []
    for x, y in eval_batches(split, device, batch_size, index, workers):
        x = transform(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(device, precision):
            outs.append(model(x).float())
        labels.append(y)
    # a rank with no samples still takes part in the gather, with the right number of columns
    logits = torch.cat(outs) if outs else torch.empty(0, _num_classes(model), device=device)
    targets = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long, device=device)
    logits, targets, index = (distributed.all_gather_varlen(t) for t in (logits, targets, index.to(device)))
    order = torch.argsort(index)
    model.train(was_training)
    return logits[order].cpu(), targets[order].cpu()


def posthoc_report(val_logits: torch.Tensor | None, val_targets: torch.Tensor | None, test_logits: torch.Tensor,
                   test_targets: torch.Tensor, class_counts, tau_grid, published_pr_tau: float) -> dict:
    """Raw test metrics plus PR and post-hoc logit adjustment, each tau chosen on validation."""
    report = {"raw": metrics.evaluate(test_logits, test_targets, class_counts)}
    if val_logits is not None and len(val_logits):
        marginal_val = posthoc.class_marginal(val_logits)
        tau, val_acc, _ = posthoc.search_tau(
            val_logits, val_targets, lambda z, t: posthoc.rebalance(z, t, marginal=marginal_val), tau_grid)
        report["pr"] = {**metrics.evaluate(posthoc.rebalance(test_logits, tau, marginal=marginal_val), test_targets,
                                           class_counts), "tau": tau, "val_top1": val_acc,
                        "protocol": "marginal and tau from validation"}
        tau, val_acc, _ = posthoc.search_tau(
            val_logits, val_targets, lambda z, t: posthoc.adjust(z, class_counts, t), tau_grid)
        report["la"] = {**metrics.evaluate(posthoc.adjust(test_logits, class_counts, tau), test_targets,
                                           class_counts), "tau": tau, "val_top1": val_acc,
                        "protocol": "post-hoc logit adjustment, tau from validation"}
    report["pr_transductive"] = {
        **metrics.evaluate(posthoc.rebalance(test_logits, published_pr_tau), test_targets, class_counts),
        "tau": published_pr_tau, "protocol": "transductive: marginal from the test set, published tau"}
    for key in ("pr", "la", "pr_transductive"):  # softmax of re-balanced scores is no calibrated probability
        if key in report:
            report[key]["ece"] = report[key]["confidence"] = None
    return report


def predict_split(model, split, bench, cfg, device: torch.device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`predict` on one of the benchmark's splits as a run evaluates: its evaluation transform, batch
    size, memory format and workers."""
    return predict(model, split, bench.eval_transform, device, precision, cfg.eval.batch_size, cfg.channels_last,
                   cfg.data.workers)


def evaluate_model(model, bench, cfg, device: torch.device, precision: str) -> tuple[dict, dict]:
    """The one evaluation of a trained model, used by training's end and by `longtail eval`: logits
    of validation and test with `model` as it is (its memory format, the run's precision and
    evaluation batch size), then `posthoc_report` (taus on validation). Returns (report,
    {"val"/"test": (logits, labels)})."""
    preds = {"val": predict_split(model, bench.val, bench, cfg, device, precision)} if bench.val is not None else {}
    preds["test"] = predict_split(model, bench.test, bench, cfg, device, precision)
    val = preds.get("val", (None, None))
    return posthoc_report(*val, *preds["test"], bench.class_counts, cfg.eval.tau_grid, cfg.eval.published_pr_tau), preds


VARIANT_LABELS = {
    "raw": "raw",
    "pr": "PR (tau on val)",
    "la": "post-hoc LA (tau on val)",
    "pr_transductive": "PR transductive (test marginal, published tau)",
}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def report_markdown(results: dict) -> str:
    """A markdown table: one row per checkpoint x post-hoc variant."""
    lines = ["| checkpoint | variant | top-1 | many | medium | few | ECE | confidence | tau |",
             "|---|---|---|---|---|---|---|---|---|"]
    for ckpt, variants in results["checkpoints"].items():
        for key, label in VARIANT_LABELS.items():
            if key not in variants:
                continue
            r = variants[key]
            lines.append(f"| {ckpt} | {label} | {_fmt(r['top1'])} | {_fmt(r['many'])} | {_fmt(r['medium'])} | "
                         f"{_fmt(r['few'])} | {_fmt(r.get('ece'))} | {_fmt(r.get('confidence'))} | "
                         f"{r.get('tau', '-')} |")
    best_test = results.get("best_test_epoch")
    if best_test:
        lines.append("")
        lines.append(f"Best epoch selected on TEST (as papers report; not an honest estimate): "
                     f"{best_test['top1']:.2f} at epoch {best_test['epoch']}.")
    return "\n".join(lines) + "\n"
