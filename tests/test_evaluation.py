import torch

from longtail import evaluation, posthoc
from longtail.evaluation import posthoc_report, resolve_precision


def test_auto_precision_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr(evaluation, "_cpu_bf16_is_fast", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(evaluation, "_cpu_bf16_is_fast", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"


def _cpuinfo(vendor, *flags):
    # two logical processors, as /proc/cpuinfo lists them
    block = f"processor\t: {{}}\nvendor_id\t: {vendor}\nmodel name\t: X\nflags\t\t: fpu sse2 avx2 {' '.join(flags)}\n"
    return "\n".join(block.format(i) for i in range(2))


def test_bf16_is_fast_only_on_the_cpus_where_it_was_measured_faster():
    assert evaluation.bf16_is_fast(_cpuinfo("GenuineIntel", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"))
    assert evaluation.bf16_is_fast(_cpuinfo("AuthenticAMD", "avx512f", "avx512_bf16"))
    # Intel with AVX512-BF16 but no AMX measured slower in bf16
    assert not evaluation.bf16_is_fast(_cpuinfo("GenuineIntel", "avx512f", "avx512_bf16"))
    assert not evaluation.bf16_is_fast(_cpuinfo("AuthenticAMD", "avx512f"))
    assert not evaluation.bf16_is_fast(_cpuinfo("AuthenticAMD"))
    assert not evaluation.bf16_is_fast("")
    # a flag name that only contains the wanted one does not count
    assert not evaluation.bf16_is_fast(_cpuinfo("AuthenticAMD", "xavx512_bf16"))


def test_posthoc_report_takes_taus_from_validation_and_labels_the_transductive_figure():
    g = torch.Generator().manual_seed(0)
    counts = [100, 30, 5]
    bias = torch.log(torch.tensor(counts, dtype=torch.float64) / 135)

    def sample(n):  # balanced labels, logits biased towards the head class
        y = torch.arange(3).repeat(n)
        z = torch.randn(len(y), 3, generator=g, dtype=torch.float64) + 2.0 * torch.nn.functional.one_hot(y, 3) + bias
        return z, y

    zv, yv = sample(40)
    zt, yt = sample(200)
    grid = [0.0, 0.5, 1.0, 1.5]
    rep = posthoc_report(zv, yv, zt, yt, counts, grid, published_pr_tau=1.0)
    # PR: tau and marginal from validation, chosen by brute force here
    mv = posthoc.class_marginal(zv)
    accs = [float((posthoc.rebalance(zv, t, marginal=mv).argmax(1) == yv).double().mean()) for t in grid]
    tau = grid[max(range(len(grid)), key=lambda i: (accs[i], -abs(grid[i])))]
    assert rep["pr"]["tau"] == tau
    want = 100 * float((posthoc.rebalance(zt, tau, marginal=mv).argmax(1) == yt).double().mean())
    assert abs(rep["pr"]["top1"] - want) < 1e-9
    # transductive: marginal from the test logits themselves, the published tau, and it says so
    want = 100 * float((posthoc.rebalance(zt, 1.0).argmax(1) == yt).double().mean())
    assert abs(rep["pr_transductive"]["top1"] - want) < 1e-9 and "transductive" in rep["pr_transductive"]["protocol"]
    assert rep["raw"]["top1"] == 100 * float((zt.argmax(1) == yt).double().mean())
    assert rep["la"]["tau"] in grid and rep["pr"]["ece"] is None and rep["pr"]["confidence"] is None
    assert rep["raw"]["confidence"] == 100 * float(torch.softmax(zt.double(), 1).max(1).values.mean())
