"""The README's examples stay true: its Python snippet runs and does what its comments say, and
every `longtail` command line it shows parses, with configs and overrides that load."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from longtail import cli, losses
from longtail.config import load_config

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def _code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_the_own_training_loop_snippet_runs_and_updates_gala_as_its_comments_say():
    (snippet,) = _code_blocks(_section("Use a loss in your own training loop"), "python")
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 64, generator=gen), torch.randint(0, 5, (16,), generator=gen)) for _ in range(3)]
    val_logits, test_logits = torch.randn(40, 5, generator=gen), torch.randn(30, 5, generator=gen)
    # the user's optimizer owns their backbone, not the snippet's head: the head stays as initialised
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ns = {"loader": batches, "optimizer": optimizer, "val_logits": val_logits, "test_logits": test_logits}
    torch.manual_seed(0)
    exec(compile(snippet, "README.md", "exec"), ns)

    # GALA's statistics after three steps, replayed from SPEC section 3 (reference mode: every logit
    # gets + lambda1 log(theta_j + eps); theta is the running sum of the cumulative per-step increments)
    head, criterion = ns["head"], ns["criterion"]
    theta, running = torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    with torch.no_grad():
        for features, target in batches:
            adjusted = head(features).double() + 1.2 * torch.log(theta + 1e-3)
            p = adjusted.softmax(dim=1)
            g_target = (1 - p[torch.arange(len(target)), target]) / len(target)  # |g_{i,y_i}|
            running += torch.zeros(5, dtype=torch.float64).index_add_(0, target, g_target)
            theta += running
    assert theta.abs().sum() > 0
    torch.testing.assert_close(criterion.theta, theta, rtol=1e-5, atol=1e-8)
    # "GALA's statistics are buffers, so state_dict() carries them"
    torch.testing.assert_close(criterion.state_dict()["theta"], theta, rtol=1e-5, atol=1e-8)

    # PR with the validation marginal: z_ij - tau log s_j with s_j = sum_i softmax(z_val)_ij
    expected = test_logits - torch.log(val_logits.softmax(dim=1).sum(dim=0))
    scores = ns["scores"]
    torch.testing.assert_close((scores - scores[:, :1]).double(), (expected - expected[:, :1]).double(),
                               rtol=1e-5, atol=1e-5)


def test_the_apis_the_loss_section_names_exist_with_the_arguments_it_gives():
    text = _section("Use a loss in your own training loop")
    named = re.search(r"`losses.available\(\)`\): (.*?)\. DRW", text, flags=re.S).group(1)
    assert set(re.findall(r"`(\w+)`", named)) == set(losses.available())
    counts = [500, 300, 120, 40, 8]
    z, y = torch.randn(12, 5), torch.randint(0, 5, (12,))

    # DRW: class-balanced weights turn the loss into weighted CE (mean over the batch's weights)
    criterion = losses.build("ce", class_counts=counts)
    weights = losses.class_balanced_weights(counts)
    criterion.set_class_weights(weights)
    torch.testing.assert_close(criterion(z, y), F.cross_entropy(z, y, weight=torch.as_tensor(weights).float()))

    from longtail.data import mixup
    from longtail.data.sampling import class_balanced_batches
    from longtail.heads import CosineHead

    labels = torch.tensor([0] * 50 + [1] * 10 + [2] * 4)
    batches = class_balanced_batches(labels, 8, 0, 0)  # (labels, batch_size, epoch, seed)
    assert [len(b) for b in batches] == [8] * (len(labels) // 8)
    # "longtail.data.mixup mixes a batch and its loss"
    x = torch.randn(12, 3)
    lam, perm = mixup.mixup_draw(12, alpha=1.0, seed=0, epoch=0, step=0)
    torch.testing.assert_close(mixup.mix(x, lam, perm), lam * x + (1 - lam) * x[perm])
    torch.testing.assert_close(mixup.mixed_loss(F.cross_entropy, z, y, lam, perm),
                               lam * F.cross_entropy(z, y) + (1 - lam) * F.cross_entropy(z, y[perm]))
    assert CosineHead(64, len(counts), scale=30)(torch.randn(3, 64)).shape == (3, len(counts))
    gcl = losses.build("gcl", class_counts=counts, scale=20, margin=0.1, focal_gamma=1.0)
    assert torch.isfinite(gcl(z.clamp(-1, 1), y))


def _readme_commands() -> list[list[str]]:
    """Every command in the README's bash blocks (comments dropped, `a && b` split, <placeholders>
    filled in), as its words."""
    commands = []
    for block in _code_blocks(README, "bash"):
        for line in block.splitlines():
            for part in line.split("#")[0].split("&&"):
                words = shlex.split(re.sub(r"<[^>]*>", "1", part.strip()))
                if words:
                    commands.append(words)
    return commands


def _readme_command_lines() -> list[list[str]]:
    """Every `longtail ...` command (and torchrun's `-m longtail ...`) in the README, as argv for
    cli.main."""
    lines = []
    for words in _readme_commands():
        if "-m" in words and words[words.index("-m") + 1] == "longtail":
            lines.append(words[words.index("-m") + 2:])
        elif words[0] == "longtail":
            lines.append(words[1:])
    return lines


def test_every_longtail_command_in_the_readme_parses_and_its_config_loads():
    commands = _readme_command_lines()
    assert {c[0] for c in commands} >= {"demo", "train", "eval", "report", "data"}
    for argv in commands:
        args = cli.build_parser().parse_args(argv)
        if args.command == "train" and not args.resume:
            # the config exists and every dotted override names a real key with a valid value
            cfg = load_config(cli.resolve_config_path(args.config), args.overrides)
            for override in args.overrides:
                key, value = override.split("=", 1)
                node = cfg
                for part in key.split("."):
                    node = getattr(node, part)
                assert str(node).lower() == value.lower() or node == type(node)(value), (argv, key, node)


@pytest.mark.slow
def test_every_benchmark_command_in_the_readme_names_a_script_and_flags_it_accepts():
    commands = [words[1:] for words in _readme_commands()
                if words[0] == "python" and words[1:2] and words[1].startswith("benchmarks/")]
    assert len(commands) >= 5
    root = Path(__file__).resolve().parents[1]
    for script, *args in commands:
        # --help parses the script's arguments without running a benchmark
        help_text = subprocess.run([sys.executable, script, "--help"], cwd=root, capture_output=True, text=True,
                                   check=True, timeout=120).stdout
        for flag in (a for a in args if a.startswith("--")):
            assert re.search(rf"\[{re.escape(flag)}\b", help_text), (script, flag)


def test_the_losses_the_readme_names_as_batch_means_are_exactly_the_unweighted_ones():
    """"weighted, each loss takes the weighted mean sum w l / sum w, except ...": a weighted mean does not
    change when every weight is scaled; a batch mean of weighted terms does."""
    text = " ".join(_section("Use a loss in your own training loop").split())
    exceptions = re.search(r"weighted mean sum w l / sum w, except (.*?)\. GALA's", text).group(1)
    counts = [500, 300, 120, 40, 8]
    z, y = (torch.rand(16, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 10, torch.arange(16) % 5
    weights = losses.class_balanced_weights(counts)
    built = {name: losses.build(name, class_counts=counts) for name in losses.available() if name != "gcl"}
    built["gcl"] = losses.build("gcl", class_counts=counts, noise_mul=0.0)
    built["gcl with focal_gamma"] = losses.build("gcl", class_counts=counts, noise_mul=0.0, focal_gamma=1.0)
    named = {"focal": "`focal`" in exceptions, "gcl with focal_gamma": "`gcl` with `focal_gamma`" in exceptions}
    for name, criterion in built.items():
        with torch.no_grad():
            criterion.set_class_weights(weights)
            once = criterion(z, y)
            criterion.set_class_weights(3 * weights)
            scaled = criterion(z, y)
        assert torch.isclose(once, scaled, rtol=1e-5).item() != named.get(name, False), name


def test_the_configs_the_readme_lists_are_the_shipped_ones():
    """Every CIFAR config name the README's config paragraph lists exists at every IF, and every shipped
    CIFAR config is listed."""
    text = " ".join(_section("Train, evaluate, report").split())
    listed = re.search(r"IF 10/50/100/200 for (.*?), and ImageNet-LT", text).group(1)
    names = set(re.findall(r"\b[a-z][a-z0-9_]*[a-z0-9]\b", re.sub(r"`[^`]*`", "", listed)))
    shipped = {p.stem.split("_", 3)[3] for p in cli.CONFIG_DIR.glob("cifar*_lt_if*.yaml")}
    assert shipped <= names, sorted(shipped - names)
    for name in shipped:
        for dataset in ("cifar10", "cifar100"):
            for imb in (10, 50, 100, 200):
                assert (cli.CONFIG_DIR / f"{dataset}_lt_if{imb}_{name}.yaml").is_file()
