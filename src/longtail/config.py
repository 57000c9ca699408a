"""Typed run configuration: dataclasses, YAML files, dotted command-line overrides.

    cfg = resolve(load_config("configs/cifar100_lt_if100_gala_reference.yaml", ["seed=1"]))

Every key is declared once, on its field, with `key(default, ...)`: its default, a one-line comment,
and whatever else the code must know about it (its choices or bounds, whether it is a runtime key,
differs between seeds, may change on resume, or fixes the data split). Values are checked once, as
they enter (`load_config` / `config_from_dict`), each failure one sentence naming the key and the
value. `resolve` then fills in what follows from other keys (the head and scale a loss needs, an
absolute data root); it checks nothing.

Loss hyper-parameters sit beside `loss.name` (e.g. `loss.lambda1`) and are checked against the
signature of that loss's constructor. Numbers may be written 1e-3 (YAML 1.1 would read text); a key
that holds text takes an override as typed (run_name=007 is "007").
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import json
import math
import os
import re
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .data import BENCHMARKS, LIST_DATASETS
from .data.augment import AUGMENTS
from .data.sampling import SAMPLERS


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what is valid."""


def key(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
        choices: tuple | Callable[[], Any] | None = None, min: float | None = None, max: float | None = None,
        below: float | None = None, above: float | None = None, check: Callable[[str, Any], None] | None = None,
        runtime: bool = False, per_seed: bool = False, resumable: bool = False, split: bool = False,
        when: Callable[[Config], bool] | None = None, hint: str = ""):
    """A config field and everything declared about it.

    choices: the allowed values (or a function returning them, for registries); min / max: inclusive
    bounds, below / above: exclusive ones; check(name, value): any other test of the value alone.
    runtime: how a run is made, not what it learns (device, threads, ...): not part of its setting.
    per_seed: differs between the seeds of one setting (the seed, a second stage's first-stage run).
    resumable: may be changed on `--resume`. split: fixes which images train and validate (a second
    stage must keep its first stage's). when(cfg): the key has an effect only where this holds, and
    is left out of the setting elsewhere (a switch at its off value is left out too, so settings made
    before it existed stay the same). hint: appended to a bounds message (what 0 means, ...).
    """
    meta = dict(choices=choices, min=min, max=max, below=below, above=above, check=check, runtime=runtime,
                per_seed=per_seed, resumable=resumable, split=split, when=when, hint=hint)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _check_device(name: str, value: str) -> None:
    """"auto" or a device string torch knows (cpu, cuda, cuda:1, mps, xpu, ...), before anything loads."""
    import torch

    if value == "auto":
        return
    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{name} must be auto or a torch device such as cpu, cuda or cuda:1, got {value!r}") from None


def _check_increasing(name: str, value: list) -> None:
    if any(b <= a for a, b in zip(value, value[1:])):
        raise ConfigError(f"{name} must increase, got {value}")


def _check_tau_grid(name: str, value: list) -> None:
    if not value:
        raise ConfigError(f"{name} must be a non-empty list of numbers, got {value}")


def _model_names():
    from .models import available_models

    return tuple(available_models())


def _loss_names():
    from . import losses

    return tuple(losses.available())


def _large_images(cfg: Config) -> bool:
    return cfg.data.name in LIST_DATASETS


@dataclass
class DataConfig:
    name: str = key("cifar100-lt", choices=BENCHMARKS, split=True)  # which benchmark (longtail.data.BENCHMARKS)
    # the folder holding the data (CIFAR: the one with cifar-100-python/; lists: the image root; folder:
    # the image folder); unset: the environment variable LONGTAIL_DATA
    root: str | None = key(None, runtime=True, resumable=True)
    imb_factor: float = key(100.0, min=1, split=True)  # CIFAR-LT: n_max / n_min
    val_per_class: int = key(20, min=0, split=True)  # validation images per class, drawn from outside the train set
    val_seed: int = key(0, min=0, below=2**32, split=True)  # the validation split stays the same across seeds
    # CIFAR-LT keeps every image of the head class, so none is left for its validation share:
    # "move" takes them from the end of that class's LT selection, "error" refuses
    val_shortfall: str = key("move", choices=("move", "error"), split=True)
    test_fraction: float = key(0.2, min=0, below=1, split=True,
                               when=lambda c: c.data.name == "folder")  # folder: share of each class tested
    download: bool = key(False, runtime=True)  # CIFAR: fetch and verify the official archive if missing
    # check the CIFAR pickles against the official MD5s; off only for a copy whose unused images were
    # blanked to travel small (benchmarks/device_data.py checks the images it keeps instead)
    verify: bool = key(True, runtime=True)
    train_list: str | None = key(None, split=True)  # list datasets: "relative/path label" lines
    val_list: str | None = key(None, split=True)
    test_list: str | None = key(None)
    image_size: int = key(32, min=1)  # the training size (large images: the random resized crop's)
    resize: int = key(256, min=1, when=_large_images)  # large images: short side before the centre crop
    augment: str = key("autoaugment", choices=AUGMENTS)  # the training augmentation recipe
    limit_per_class: int | None = key(None, min=1)  # cap per-class training images (tiny smoke runs)
    limit_eval_per_class: int | None = key(None, min=1)
    workers: int = key(4, min=0, runtime=True, resumable=True)  # DataLoader workers for image files
    # on a GPU, fetch and augment the next batch on a side CUDA stream while the model trains on this
    # one (the same batches; not yet measured on a GPU); no effect on a CPU
    prefetch: bool = key(False, runtime=True, resumable=True)
    # instance: every training image once per epoch; class_balanced: as many draws, each a class
    # uniformly then one of its images (classifier re-training, e.g. GCL's stage two)
    sampler: str = key("instance", choices=SAMPLERS)


@dataclass
class ModelConfig:
    name: str = key("resnet32", choices=_model_names)  # a backbone of longtail.models
    head: str = key("auto", choices=("auto", "linear", "cosine"))  # auto: the loss's (cosine for ldam, gcl, ala)
    scale: float = key(30.0, above=0)  # the cosine head's s
    # a torchvision-layout ImageNet state dict for the backbone; its input normalisation is used
    pretrained: str | None = key(None)
    backbone_lr: float = key(1.0, min=0, when=lambda c: c.model.backbone_lr != 1)  # the backbone's learning rate as a multiple of optim.lr (fine-tuning)
    sync_bn: bool = key(False)
    # Start from a longtail run's weights, backbone and head: its folder (best.pt) or a .pt file.
    # With freeze_backbone, only the head trains and the backbone's batch-norm statistics stay as
    # loaded: a two-stage method's second stage (classifier re-training).
    init_from: str | None = key(None, per_seed=True)
    freeze_backbone: bool = key(False)


@dataclass
class LossConfig:
    name: str = key("ce", choices=_loss_names)  # a loss of longtail.losses
    drw_epoch: int | None = key(None, min=0)  # switch on class-balanced weights from this (0-based) epoch
    drw_beta: float = key(0.9999, min=0, below=1)
    params: dict[str, Any] = field(default_factory=dict)  # the loss's own hyper-parameters


@dataclass
class OptimConfig:
    epochs: int = key(200, min=1)
    batch_size: int = key(64, min=1)  # global batch: split across ranks under torchrun
    lr: float = key(0.1, above=0)
    momentum: float = key(0.9, min=0, below=1)
    nesterov: bool = key(False)
    weight_decay: float = key(5e-4, min=0)
    schedule: str = key("cosine", choices=("cosine", "step"))
    warmup_epochs: int = key(2, min=0)  # linear: lr * (epoch + 1) / warmup_epochs for the first epochs
    # "step": lr times the factor from each milestone epoch on
    milestones: list[int] = key(factory=lambda: [160, 180], check=_check_increasing,
                                when=lambda c: c.optim.schedule == "step")
    step_factors: list[float] = key(factory=lambda: [0.01, 0.0001], when=lambda c: c.optim.schedule == "step")
    drop_last: bool = key(True)
    grad_clip: float | None = key(None, min=0, hint=" (0 or null: no clipping)")
    mixup_alpha: float = key(0.0, min=0, hint=" (0 = no mixup)")  # mixup with lam ~ Beta(alpha, alpha)
    # CutMix (Yun et al.): with probability cutmix_prob a step pastes a partner's box, lam ~ Beta(a, a)
    cutmix_alpha: float = key(0.0, min=0, hint=" (0 = no CutMix)", when=lambda c: c.optim.cutmix_alpha > 0)
    cutmix_prob: float = key(0.5, min=0, max=1, when=lambda c: c.optim.cutmix_alpha > 0)
    # SAM (Foret et al.): each step ascends to w + rho g/|g| and steps with the gradient there (2 passes)
    sam_rho: float = key(0.0, min=0, hint=" (0 = plain SGD)", when=lambda c: c.optim.sam_rho > 0)
    sam_adaptive: bool = key(False, when=lambda c: c.optim.sam_rho > 0)  # ASAM's |w|-scaled ascent
    # MaxNorm (weight balancing): after each step, classifier rows longer than the threshold are
    # scaled to it; the threshold is this fraction of the way from the shortest to the longest row at
    # the start of training (the released code's, 0.1 in its demo)
    max_norm: float | None = key(None, min=0, max=1, when=lambda c: c.optim.max_norm is not None)


@dataclass
class EvalConfig:
    every: int = key(1, min=1)  # evaluate on validation every N epochs (and on the last)
    # false: the test split is never read (while choosing settings); results hold validation figures only
    test: bool = key(True, runtime=True)
    track_test: bool = key(True, runtime=True)  # also evaluate test at the same cadence, only for the best-on-test figure
    published_pr_tau: float = key(1.0)  # the paper's transductive PR tau, reported beside ours
    tau_grid: list[float] = key(factory=lambda: [round(0.1 * i, 1) for i in range(21)], check=_check_tau_grid)
    batch_size: int = key(512, min=1, runtime=True, resumable=True)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = key(0, min=0, below=2**32, per_seed=True)
    device: str = key("auto", check=_check_device, runtime=True)  # auto: cuda if available, else cpu
    precision: str = key("auto", choices=("auto", "fp32", "bf16", "fp16"))  # autocast; see evaluation.resolve_precision
    channels_last: bool = key(True)
    compile: bool = key(False)
    # torch.compile mode; reduce-overhead replays the network as CUDA graphs (on a GPU, launch overhead
    # dominates a small model like ResNet-32): the same computation, so a runtime key like the device
    compile_mode: str = key("default", choices=("default", "reduce-overhead", "max-autotune",
                                                "max-autotune-no-cudagraphs"), runtime=True)
    # Steps between the loop's checks for a NaN/inf loss and a stop request. Each check reads a value
    # back from the device, which on a GPU stalls the queue of kernels; 0 = auto: every step on CPU,
    # every 25 on GPU. A bad loss is still caught before any checkpoint is written.
    check_every: int = key(0, min=0, runtime=True, resumable=True, hint=" (0 = auto)")
    threads: int | None = key(None, min=1, runtime=True, resumable=True)  # CPU threads; unset: the free cores
    out_dir: str = key("runs", runtime=True)
    run_name: str | None = key(None, runtime=True)
    tensorboard: bool = key(False, runtime=True, resumable=True)
    # bar | log (a line per epoch) | quiet | auto (bar on a terminal, else log)
    progress: str = key("auto", choices=("auto", "bar", "log", "quiet"), runtime=True, resumable=True)

    def to_dict(self) -> dict:
        d = asdict(self)
        params = d["loss"].pop("params")
        d["loss"].update(params)  # files and the run folder show loss params beside the name
        return d


# ----------------------------------------------------------------------------- what is declared

def _section(f: dataclasses.Field) -> type | None:
    """The dataclass a field holds (Config.optim -> OptimConfig), or None for a plain value."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
    return type(default) if dataclasses.is_dataclass(default) else None


def declared() -> dict[str, dataclasses.Field]:
    """Every declared key as {"section.key": field} ("seed" for a top-level one), loss parameters aside."""
    out = {}
    for f in fields(Config):
        sub = _section(f)
        if sub is None:
            out[f.name] = f
        else:
            out.update({f"{f.name}.{g.name}": g for g in fields(sub) if g.name != "params"})
    return out


def keys_where(flag: str) -> tuple[str, ...]:
    """The dotted keys declared with `flag` (runtime, per_seed, resumable, split)."""
    return tuple(k for k, f in declared().items() if f.metadata.get(flag))


# Loss parameters that change how a loss checks its inputs, not what it computes.
RUNTIME_LOSS_PARAMS = ("check_values",)


# ----------------------------------------------------------------------------- checking values

# A number as YAML 1.2 writes it: PyYAML (YAML 1.1) reads 1e-3 as a string, wanting 1.0e-3
_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _resolve_type(tp):
    if isinstance(tp, str):
        return eval(tp, vars(typing) | {"Any": Any})  # annotations are strings under `from __future__`
    return tp


def _coerce(value: Any, tp, name: str) -> Any:
    """Check `value` against the annotation `tp` (int/float/str/bool, optional, lists)."""
    tp = _resolve_type(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        return _coerce(value, [a for a in args if a is not type(None)][0], name)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list like [1, 2], got {value!r}")
        return [_coerce(v, args[0], name) for v in value]
    if origin is dict or tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if tp is float:
        return _coerce_float(value, name)
    if isinstance(value, str):
        return value
    # YAML turned unquoted text into something else (007 -> 7, no -> false, 12:30 -> 750): refuse
    # rather than guess the text back
    raise ConfigError(f"{name} must be a string, got {value!r} (YAML reads unquoted 007, no or 2026-12-03 as a "
                      "number, a boolean or a date: quote the text)")


def _coerce_float(value: Any, name: str) -> float:
    """A finite number: NaN slips through every `x <= 0` check and inf is no setting."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # 1e-3, which YAML 1.1 leaves a string
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_declared(name: str, value: Any, meta) -> None:
    """The field's own declaration: choices, bounds, its check."""
    if value is None:
        return
    choices = meta.get("choices")
    if callable(choices):
        choices = choices()
    if choices is not None and value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    items = value if isinstance(value, list) else [value]
    for v in items if all(isinstance(v, (int, float)) for v in items) else []:
        for bound, fails, says in (("min", lambda b: v < b, ">="), ("max", lambda b: v > b, "<="),
                                   ("above", lambda b: v <= b, ">"), ("below", lambda b: v >= b, "<")):
            b = meta.get(bound)
            if b is not None and fails(b):
                raise ConfigError(f"{name} must be {says} {b:g}{meta.get('hint', '')}, got {value!r}"
                                  if isinstance(b, float) else
                                  f"{name} must be {says} {b}{meta.get('hint', '')}, got {value!r}")
    if meta.get("check"):
        meta["check"](name, value)


def _loss_signature(name: str) -> dict[str, Any]:
    """The loss's own hyper-parameters (from its constructor) with their defaults."""
    from . import losses

    sig = inspect.signature(losses.REGISTRY[name].__init__)
    return {p.name: p.default for p in sig.parameters.values()
            if p.name not in ("self", "class_counts", "generator") and p.kind is p.POSITIONAL_OR_KEYWORD}


def _check_loss_params(name: str, params: dict) -> dict:
    valid = _loss_signature(name)
    out = {}
    for k, v in params.items():
        if v is None:  # `loss.key=null` removes a parameter: the loss's default applies
            continue
        if k not in valid:
            raise ConfigError(f"loss.{k} is not a parameter of loss {name!r}; its parameters are: "
                              f"{', '.join(sorted(valid)) or '(none)'} (and for every loss: name, drw_epoch, drw_beta)")
        default = valid[k]
        out[k] = _coerce(v, type(default), f"loss.{k}") if isinstance(default, (bool, int, float, str)) else v
    return out


def _did_you_mean(cls, name: str, prefix: str) -> str:
    """A hint for an unknown key: the same key inside a section (epochs -> optim.epochs), else a
    near spelling of a key here or in a section."""
    dotted: dict[str, list[str]] = {}
    for f in fields(cls):
        dotted.setdefault(f.name, []).append(f"{prefix}{f.name}")
        sub = _section(f)
        for g in fields(sub) if sub else ():
            if g.name != "params":  # loss parameters are given by their own names
                dotted.setdefault(g.name, []).append(f"{prefix}{f.name}.{g.name}")
    close = [name] if name in dotted else difflib.get_close_matches(name, list(dotted), n=2)
    options = [path for n in close for path in dotted[n]]
    if not options:
        return ""
    listed = options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"
    return f"; did you mean {listed}?"


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    names = {f.name: f for f in fields(cls)}
    kwargs, extra = {}, {}
    for name, value in data.items():
        dotted = f"{prefix}{name}"
        if name not in names or (cls is LossConfig and name == "params"):
            if cls is LossConfig:
                extra[name] = value  # a loss hyper-parameter, checked against the loss below
                continue
            raise ConfigError(f"unknown key {dotted!r}; valid keys here: {', '.join(sorted(names))}"
                              + _did_you_mean(cls, name, prefix))
        f = names[name]
        if _section(f):
            kwargs[name] = _build(_section(f), value or {}, dotted + ".")
        else:
            kwargs[name] = _coerce(value, f.type, dotted)
            _check_declared(dotted, kwargs[name], f.metadata)
    obj = cls(**kwargs)
    if cls is LossConfig:
        obj.params = _check_loss_params(obj.name, extra)
    return obj


def _check_relations(cfg: Config) -> None:
    """The checks that involve more than one key."""
    o, lc = cfg.optim, cfg.loss
    if len(o.milestones) != len(o.step_factors):
        raise ConfigError(f"optim.milestones ({len(o.milestones)} entries) and optim.step_factors "
                          f"({len(o.step_factors)}) must have the same length")
    if lc.drw_epoch is not None and lc.drw_epoch >= o.epochs:
        raise ConfigError(f"loss.drw_epoch must be an epoch of the run (0 to {o.epochs - 1}) or null, got {lc.drw_epoch}")
    if cfg.model.init_from and cfg.model.pretrained:
        raise ConfigError("set model.init_from (a whole longtail run) or model.pretrained (a backbone), not both")
    if o.mixup_alpha and o.cutmix_alpha:
        raise ConfigError("optim.mixup_alpha and optim.cutmix_alpha are both set; choose one way of mixing images")
    twice = [k for k, on in (("optim.mixup_alpha", o.mixup_alpha), ("optim.cutmix_alpha", o.cutmix_alpha)) if on]
    if twice and lc.name == "gala":
        # GALA accumulates gradient statistics from each call: a mixed batch would feed it twice
        raise ConfigError(f"{twice[0]} is not supported with loss gala (it accumulates gradient statistics per call, "
                          "which SPEC defines for one label per image); set it to 0")
    if o.sam_rho and cfg.precision == "fp16":
        raise ConfigError("optim.sam_rho with precision=fp16: SAM's two passes do not go with the fp16 gradient "
                          "scaler; use precision=bf16 or fp32")
    if o.sam_rho and o.grad_clip:
        raise ConfigError("optim.grad_clip with optim.sam_rho: SAM steps with the gradient at the perturbed weights "
                          "and does not clip it; set one of them to 0")
    if lc.name == "cb" and lc.drw_epoch is not None:
        raise ConfigError("loss.drw_epoch with loss cb: cb carries class-balanced weights from the start, so DRW "
                          "would change nothing; use loss ce with loss.drw_epoch, or cb alone")
    d = cfg.data
    if d.name in LIST_DATASETS and d.resize < d.image_size:
        raise ConfigError(f"data.resize ({d.resize}) must be >= data.image_size ({d.image_size}): evaluation takes "
                          f"the short side to data.resize, then the centre data.image_size; set both, e.g. "
                          f"data.image_size={d.image_size} data.resize={round(d.image_size * 8 / 7)}")
    if cfg.model.head == "linear" and lc.name in _cosine_losses():
        raise ConfigError(f"loss {lc.name!r} is defined on the cosine head; set model.head to cosine or auto")
    given = lc.params.get("scale")
    if given is not None and lc.name in _cosine_losses() and cfg.model.scale not in (ModelConfig.scale, given):
        raise ConfigError(f"loss.scale ({given}) and model.scale ({cfg.model.scale}) differ; the cosine head and "
                          "the loss must share one scale: set one of them")
    from . import losses

    try:  # a bad value (loss.mode=xyz) fails before the data loads, not after
        losses.build(lc.name, class_counts=[2, 1], **lc.params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"loss {lc.name}: {exc}") from None


def _cosine_losses() -> frozenset:
    from .losses import COSINE_HEAD_LOSSES

    return COSINE_HEAD_LOSSES


def config_from_dict(data: dict) -> Config:
    cfg = _build(Config, data, "")
    _check_relations(cfg)
    return cfg


# ----------------------------------------------------------------------------- resolving

def resolve(cfg: Config) -> Config:
    """What the run uses, filled in from the declared values (a new Config; nothing is checked here):
    the head from the loss (cosine for ALA, LDAM and GCL, which recover cos as logits / scale, so head
    and loss share one scale); data.root absolute (from LONGTAIL_DATA when unset, ./data for CIFAR),
    and so are the list files and weights named by a path, so a run folder resumes from any working
    folder."""
    out = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data), model=dataclasses.replace(cfg.model),
                              loss=dataclasses.replace(cfg.loss, params=dict(cfg.loss.params)))
    cosine = cfg.loss.name in _cosine_losses()
    if out.model.head == "auto":
        out.model.head = "cosine" if cosine else "linear"
    if cosine:
        scale = float(cfg.loss.params.get("scale", cfg.model.scale))
        out.model.scale = out.loss.params["scale"] = scale
    root = out.data.root or os.environ.get("LONGTAIL_DATA") or ("data" if out.data.name.startswith("cifar") else None)
    if root:
        out.data.root = str(Path(root).expanduser().resolve())
    for section, name in (("data", "train_list"), ("data", "val_list"), ("data", "test_list"),
                          ("model", "pretrained"), ("model", "init_from")):
        value = getattr(getattr(out, section), name)
        if value and Path(value).expanduser().exists():  # else it is reported where it is read
            setattr(getattr(out, section), name, str(Path(value).expanduser().resolve()))
    return out


# ----------------------------------------------------------------------------- files and overrides

def _is_text_key(path: list[str]) -> bool:
    """Whether a dotted key is declared as text (run_name, data.root, ...): str or str | None."""
    f = declared().get(".".join(path))
    if f is None:
        return False  # a loss parameter, a section or an unknown key (reported when the config is built)
    tp = _resolve_type(f.type)
    return tp is str or (typing.get_origin(tp) is not None and set(typing.get_args(tp)) == {str, type(None)})


def override_key(text: str) -> str:
    """The dotted key of a `key=value` override ("optim.lr")."""
    return ".".join(parse_override(text)[0])


def parse_override(text: str) -> tuple[list[str], Any]:
    """`key=value` as (["section", "key"], value). The value is read as YAML (numbers, true/false,
    lists, null), except that a key declared as text takes the text as typed: run_name=007 is "007"
    (YAML: 7) and run_name=exp #3 keeps its "#3" (YAML: a comment). Text that is not YAML stays text."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. optim.lr=0.05")
    name, raw = text.split("=", 1)
    path, raw = name.strip().split("."), raw.strip()
    if not raw or raw.lower() in ("none", "null", "~"):
        return path, None
    if _is_text_key(path):
        quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
        return path, raw[1:-1] if quoted else raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    parsed = [(text, *parse_override(text)) for text in overrides]
    names = [value for _, path, value in parsed if path == ["loss", "name"]]
    loss = data.get("loss")
    if names and isinstance(loss, dict) and loss.get("name", LossConfig.name) != names[-1]:
        # another loss: the file's hyper-parameters belong to the old one; keep the DRW settings.
        # Dropped before any override is set, so every loss.* override stays wherever it stands.
        data["loss"] = {k: v for k, v in loss.items() if k in ("drw_epoch", "drw_beta")}
    for text, path, value in parsed:
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part!r} is not a section")
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    """A YAML config file as a mapping; an empty or malformed file is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        raise ConfigError(f"{path} is empty: a config names at least its data, model and loss (see configs/; "
                          "to train on every default, say so with an empty mapping: {})")
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data, model, loss, optim, ...)")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults), apply dotted overrides, check everything."""
    data = read_yaml(path) if path is not None else {}
    return config_from_dict(apply_overrides(data, overrides or []))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# ----------------------------------------------------------------------------- settings

def experiment_settings(cfg: Config) -> dict[str, Any]:
    """What makes two runs seeds of one setting, as {"section.key": value}: every declared key of the
    resolved config but the runtime and per-seed ones and those without effect here (`when`), and the
    loss's parameters with their defaults filled in (left out or given, the same experiment)."""
    cfg = resolve(cfg)
    flat = {}
    for name, f in declared().items():
        meta = f.metadata
        if meta.get("runtime") or meta.get("per_seed") or (meta.get("when") and not meta["when"](cfg)):
            continue
        section, _, leaf = name.rpartition(".")
        flat[name] = getattr(getattr(cfg, section) if section else cfg, leaf)
    if not flat["optim.grad_clip"]:
        flat["optim.grad_clip"] = None  # 0 and null both mean no clipping
    params = {**_loss_signature(cfg.loss.name), **cfg.loss.params}
    flat.update({f"loss.{k}": v for k, v in params.items() if k not in RUNTIME_LOSS_PARAMS})
    return flat


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of {"section.key": value} settings: equal settings, equal fingerprints."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def setting_key(cfg: Config) -> str:
    """A fingerprint of experiment_settings: runs with equal keys are seeds of one setting."""
    return settings_fingerprint(experiment_settings(cfg))
