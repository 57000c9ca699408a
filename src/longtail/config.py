"""Typed run configuration: dataclasses, YAML files, dotted command-line overrides.

    cfg = load_config("configs/cifar100_lt_if100_gala.yaml", ["loss.lambda1=1.0", "seed=1"])

Unknown keys and values of the wrong type are rejected with the valid choices listed. Loss
hyper-parameters sit beside `loss.name` (e.g. `loss.lambda1`) and are checked against the
signature of that loss's constructor. Numbers may be written 1e-3 (YAML 1.1 would read text); a
key that holds text takes an override as typed (run_name=007 is "007").
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import json
import math
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .data.augment import LARGE_IMAGE_AUGMENTS
from .data.autoaugment import SHEAR_INTERPOLATIONS
from .data.sampling import SAMPLERS


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what is valid."""


@dataclass
class DataConfig:
    name: str = "cifar100-lt"  # one of longtail.data.BENCHMARKS
    root: str | None = None  # folder holding the dataset (for CIFAR: the folder with cifar-100-python/)
    imb_factor: float = 100.0
    val_per_class: int = 20
    val_seed: int = 0  # the validation split stays the same across training seeds
    # CIFAR-LT keeps every image of the head class, so none is left for its validation share:
    # "move" takes them from the end of that class's LT selection (training then has 20 fewer
    # head-class images), "error" refuses. val_per_class=0 trains on the exact published subset.
    val_shortfall: str = "move"
    download: bool = False
    # check the CIFAR pickles against the official MD5s; off only for a copy whose unused images
    # were blanked to travel small (benchmarks/device_data.py checks the images it keeps instead)
    verify: bool = True
    train_list: str | None = None
    val_list: str | None = None
    test_list: str | None = None
    image_size: int = 32
    resize: int = 256
    augment: str = "autoaugment"  # longtail.data.augment.AUGMENTS
    # AutoAugment's ShearX/Y sampling: bicubic as the released policy (PIL, bit-exact), or nearest
    # (what longtail 0.1.0 did, and the first CIFAR-100-LT GALA reproduction run used)
    autoaugment_shear: str = "bicubic"
    # list datasets with the "imagenet" augmentations: random_resized takes torchvision's
    # RandomResizedCrop from the whole image as it is decoded; square (before 2026-12-03) crops a
    # centre square of short side `resize` on decoding and the random crop from it on the device
    train_crop: str = "random_resized"
    limit_per_class: int | None = None  # cap per-class training images (tiny smoke runs)
    limit_eval_per_class: int | None = None
    workers: int = 4  # DataLoader workers for list datasets
    # instance: every training image once per epoch; class_balanced: as many draws, each a class
    # uniformly then one of its images (classifier re-training, e.g. GCL's stage two)
    sampler: str = "instance"


@dataclass
class ModelConfig:
    name: str = "resnet32"
    head: str = "auto"  # auto = cosine for the losses defined on it (ldam, gcl, ala), else linear
    scale: float = 30.0
    pretrained: str | None = None  # a torchvision-format ImageNet state dict for the backbone
    sync_bn: bool = False
    # Start from a longtail run's weights, backbone and head: its folder (best.pt) or a .pt file.
    # With freeze_backbone, only the head trains and the backbone's batch-norm statistics stay as
    # loaded: a two-stage method's second stage (classifier re-training).
    init_from: str | None = None
    freeze_backbone: bool = False


@dataclass
class LossConfig:
    name: str = "ce"
    drw_epoch: int | None = None  # switch on class-balanced weights from this (0-based) epoch
    drw_beta: float = 0.9999
    params: dict[str, Any] = field(default_factory=dict)  # the loss's own hyper-parameters


@dataclass
class OptimConfig:
    epochs: int = 200
    batch_size: int = 64  # global batch: split across ranks under torchrun
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # "cosine" or "step"
    warmup_epochs: int = 2  # linear: lr * (epoch + 1) / warmup_epochs for the first epochs
    milestones: list[int] = field(default_factory=lambda: [160, 180])  # "step": lr *= factor from these epochs
    step_factors: list[float] = field(default_factory=lambda: [0.01, 0.0001])  # total factor from each milestone
    drop_last: bool = True
    grad_clip: float | None = None
    mixup_alpha: float = 0.0  # mixup with lam ~ Beta(alpha, alpha) on every batch; 0 = off


@dataclass
class EvalConfig:
    every: int = 1  # evaluate on validation every N epochs (and on the last)
    # false: the test split is never read (while choosing settings); results hold validation figures only
    test: bool = True
    track_test: bool = True  # also evaluate test at the same cadence, only to report the best-on-test figure
    published_pr_tau: float = 1.0  # the paper's transductive PR tau for this dataset, reported beside ours
    tau_grid: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(21)])
    batch_size: int = 512


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "auto"  # auto: cuda if available, else cpu
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast); auto: see evaluation.resolve_precision
    channels_last: bool = True
    compile: bool = False
    # torch.compile mode: default | reduce-overhead (CUDA graphs: on a GPU, launch overhead dominates
    # a small model like ResNet-32) | max-autotune | max-autotune-no-cudagraphs
    compile_mode: str = "default"
    # Steps between the loop's checks for a NaN/inf loss and a stop request. Each check reads a value
    # back from the device, which on a GPU stalls the queue of kernels; 0 = auto: every step on CPU
    # (free there), every 25 steps on GPU. A bad loss is still caught before any checkpoint is written.
    check_every: int = 0
    threads: int | None = None  # CPU threads (torch.set_num_threads)
    out_dir: str = "runs"
    run_name: str | None = None
    tensorboard: bool = False
    progress: str = "auto"  # bar | log (a JSON line per epoch) | quiet | auto (bar on a terminal, else log)

    def to_dict(self) -> dict:
        d = asdict(self)
        params = d["loss"].pop("params")
        d["loss"].update(params)  # files and the run folder show loss params beside the name
        return d


_CHOICES = {
    "precision": ("auto", "fp32", "bf16", "fp16"),
    "optim.schedule": ("cosine", "step"),
    "model.head": ("auto", "linear", "cosine"),
    "progress": ("auto", "bar", "log", "quiet"),
    "data.val_shortfall": ("move", "error"),
    "data.sampler": SAMPLERS,
    "data.autoaugment_shear": SHEAR_INTERPOLATIONS,
    "data.train_crop": ("random_resized", "square"),
    "compile_mode": ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
}


# A number as YAML 1.2 writes it: PyYAML (YAML 1.1) reads 1e-3 as a string, wanting 1.0e-3
_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _resolve(tp):
    if isinstance(tp, str):
        return eval(tp, vars(typing) | {"Any": Any})  # annotations are strings under `from __future__`
    return tp


def _coerce(value: Any, tp, key: str) -> Any:
    """Check `value` against the annotation `tp` (int/float/str/bool, optional, lists)."""
    tp = _resolve(tp)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list like [1, 2], got {value!r}")
        return [_coerce(v, args[0], key) for v in value]
    if origin is dict or tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if tp is float:
        return _coerce_float(value, key)
    if tp is str:
        if isinstance(value, str):
            return value
        # YAML turned unquoted text into something else (007 -> 7, no -> false, 12:30 -> 750):
        # refuse rather than guess the text back
        hint = " (YAML reads unquoted 007, no or 2026-12-03 as a number, a boolean or a date: quote the text)"
        raise ConfigError(f"{key} must be a string, got {value!r}{hint}")
    raise ConfigError(f"{key}: cannot check values of type {_type_name(tp)}")  # pragma: no cover


def _coerce_float(value: Any, key: str) -> float:
    """A finite number: NaN slips through every `x <= 0` check and inf is no setting."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # 1e-3, which YAML 1.1 leaves a string
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    return float(value)


def _loss_param_types(name: str) -> dict[str, Any]:
    """The loss's own hyper-parameters (from its constructor) with their defaults."""
    from longtail import losses

    if name not in losses.REGISTRY:
        raise ConfigError(f"loss.name {name!r} is unknown; choose one of {', '.join(losses.available())}")
    sig = inspect.signature(losses.REGISTRY[name].__init__)
    return {p.name: p.default for p in sig.parameters.values()
            if p.name not in ("self", "class_counts", "generator") and p.kind is p.POSITIONAL_OR_KEYWORD}


def _check_loss_params(name: str, params: dict) -> dict:
    valid = _loss_param_types(name)
    out = {}
    for k, v in params.items():
        if v is None:  # `loss.key=null` removes a parameter: the loss's default applies
            continue
        if k not in valid:
            raise ConfigError(f"loss.{k} is not a parameter of loss {name!r}; its parameters are: "
                              f"{', '.join(sorted(valid)) or '(none)'} (and for every loss: name, drw_epoch, drw_beta)")
        default = valid[k]
        if isinstance(default, bool):
            v = _coerce(v, bool, f"loss.{k}")
        elif isinstance(default, float):
            v = _coerce(v, float, f"loss.{k}")
        elif isinstance(default, int):
            v = _coerce(v, int, f"loss.{k}")
        elif isinstance(default, str):
            v = _coerce(v, str, f"loss.{k}")
        out[k] = v
    return out


def _section(f: dataclasses.Field) -> type | None:
    """The dataclass a field holds (Config.optim -> OptimConfig), or None for a plain value."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
    return type(default) if dataclasses.is_dataclass(default) else None


def _did_you_mean(cls, key: str, prefix: str) -> str:
    """A hint for an unknown key: the same key inside a section (epochs -> optim.epochs), else a
    near spelling of a key here or in a section."""
    dotted: dict[str, list[str]] = {}
    for f in fields(cls):
        dotted.setdefault(f.name, []).append(f"{prefix}{f.name}")
        sub = _section(f)
        for g in fields(sub) if sub else ():
            if g.name != "params":  # loss parameters are given by their own names
                dotted.setdefault(g.name, []).append(f"{prefix}{f.name}.{g.name}")
    close = [key] if key in dotted else difflib.get_close_matches(key, list(dotted), n=2)
    options = [path for name in close for path in dotted[name]]
    if not options:
        return ""
    listed = options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"
    return f"; did you mean {listed}?"


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {data!r}")
    names = {f.name: f for f in fields(cls)}
    kwargs = {}
    extra = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names or (cls is LossConfig and key == "params"):
            if cls is LossConfig:
                extra[key] = value  # a loss hyper-parameter, checked against the loss below
                continue
            raise ConfigError(f"unknown key {dotted!r}; valid keys here: {', '.join(sorted(names))}"
                              + _did_you_mean(cls, key, prefix))
        f = names[key]
        if _section(f):
            kwargs[key] = _build(_section(f), value or {}, dotted + ".")
        else:
            value = _coerce(value, f.type, dotted)
            if dotted in _CHOICES and value not in _CHOICES[dotted]:
                raise ConfigError(f"{dotted} must be one of {', '.join(_CHOICES[dotted])}, got {value!r}")
            kwargs[key] = value
    obj = cls(**kwargs)
    if cls is LossConfig:
        obj.params = _check_loss_params(obj.name, extra)
    return obj


def config_from_dict(data: dict) -> Config:
    cfg = _build(Config, data, "")
    _check_values(cfg)
    return cfg


def _check_values(cfg: Config) -> None:
    from longtail.data import BENCHMARKS
    from longtail.data.augment import AUGMENTS
    from longtail.models import available_models

    if cfg.data.name not in BENCHMARKS:
        raise ConfigError(f"data.name {cfg.data.name!r} is unknown; choose one of {', '.join(BENCHMARKS)}")
    if cfg.data.augment not in AUGMENTS:
        raise ConfigError(f"data.augment {cfg.data.augment!r} is unknown; choose one of {', '.join(AUGMENTS)}")
    if cfg.model.name not in available_models():
        raise ConfigError(f"model.name {cfg.model.name!r} is unknown; choose one of {', '.join(available_models())}")
    _check_device(cfg.device)
    if not 0 <= cfg.seed < 2**32:  # what numpy's and torch's generators take
        raise ConfigError(f"seed must be 0 <= seed < 2**32, got {cfg.seed}")
    o = cfg.optim
    if o.epochs < 1 or o.batch_size < 1 or o.lr <= 0 or o.warmup_epochs < 0:
        raise ConfigError("optim.epochs and optim.batch_size must be >= 1, optim.lr > 0, optim.warmup_epochs >= 0")
    if len(o.milestones) != len(o.step_factors):
        raise ConfigError("optim.milestones and optim.step_factors must have the same length")
    if any(b <= a for a, b in zip(o.milestones, o.milestones[1:])):
        raise ConfigError(f"optim.milestones must increase, got {o.milestones}")
    if o.weight_decay < 0 or not 0 <= o.momentum < 1:
        raise ConfigError(f"optim.weight_decay must be >= 0 and optim.momentum in [0, 1), got {o.weight_decay} "
                          f"and {o.momentum}")
    if o.grad_clip is not None and o.grad_clip < 0:
        raise ConfigError(f"optim.grad_clip must be >= 0 (0 or null: no clipping), got {o.grad_clip}")
    if cfg.data.workers < 0:
        raise ConfigError(f"data.workers must be >= 0 (0 = load in the training process), got {cfg.data.workers}")
    if cfg.check_every < 0:
        raise ConfigError("check_every must be >= 0 (0 = auto)")
    if cfg.eval.every < 1:
        raise ConfigError("eval.every must be >= 1")
    if cfg.eval.batch_size < 1:
        raise ConfigError(f"eval.batch_size must be >= 1, got {cfg.eval.batch_size}")
    if cfg.model.init_from and cfg.model.pretrained:
        raise ConfigError("set model.init_from (a whole longtail run) or model.pretrained (a backbone), not both")
    if not (math.isfinite(o.mixup_alpha) and o.mixup_alpha >= 0):
        raise ConfigError(f"optim.mixup_alpha must be >= 0 (0 = no mixup), got {o.mixup_alpha}")
    if o.mixup_alpha > 0 and cfg.loss.name == "gala":
        # GALA accumulates gradient statistics from each call: a mixed batch would feed it twice
        raise ConfigError("optim.mixup_alpha is not supported with loss gala (it accumulates gradient statistics "
                          "per call, which SPEC defines for one label per image); set it to 0")
    if not cfg.eval.tau_grid or not all(math.isfinite(t) for t in cfg.eval.tau_grid):
        raise ConfigError(f"eval.tau_grid must be a non-empty list of numbers, got {cfg.eval.tau_grid}")
    lc = cfg.loss
    if not 0.0 <= lc.drw_beta < 1.0:
        raise ConfigError(f"loss.drw_beta must lie in [0, 1), got {lc.drw_beta}")
    if lc.drw_epoch is not None and not 0 <= lc.drw_epoch < o.epochs:
        raise ConfigError(f"loss.drw_epoch must be an epoch of the run (0 to {o.epochs - 1}) or null, got {lc.drw_epoch}")
    _check_loss_builds(cfg.loss)
    _tie_head_to_loss(cfg)


def _check_device(device: str) -> None:
    """"auto" or a device string torch knows (cpu, cuda, cuda:1, mps, xpu, ...), before anything loads."""
    import torch

    if device == "auto":
        return
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device must be auto or a torch device such as cpu, cuda or cuda:1, got {device!r}"
                          ) from None


def _check_loss_builds(lc: LossConfig) -> None:
    """Build the loss on two stand-in classes, so a bad value (loss.mode=xyz) fails before the data
    loads: types are checked against the signature, values only by the loss's constructor."""
    from longtail import losses

    try:
        losses.build(lc.name, class_counts=[2, 1], **lc.params)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"loss {lc.name}: {exc}") from None


def _tie_head_to_loss(cfg: Config) -> None:
    """ALA, LDAM and GCL are defined on the cosine head (SPEC section 2) and recover cos as z / scale:
    the head and the loss must share one scale."""
    from longtail.losses import COSINE_HEAD_LOSSES

    if cfg.loss.name not in COSINE_HEAD_LOSSES:
        return
    if cfg.model.head == "linear":
        raise ConfigError(f"loss {cfg.loss.name!r} is defined on the cosine head; set model.head to cosine or auto")
    default = ModelConfig().scale
    given = cfg.loss.params.get("scale")
    if given is not None and cfg.model.scale not in (default, given):
        raise ConfigError(f"loss.scale ({given}) and model.scale ({cfg.model.scale}) differ; the cosine head and "
                          "the loss must share one scale: set one of them")
    scale = given if given is not None else cfg.model.scale
    cfg.model.scale = float(scale)
    cfg.loss.params["scale"] = float(scale)


def _is_text_key(path: list[str]) -> bool:
    """Whether a dotted key is declared as text (run_name, data.root, ...): str or str | None."""
    cls, tp = Config, None
    for part in path:
        f = {f.name: f for f in fields(cls)}.get(part) if cls else None
        if f is None:
            return False  # a loss parameter or an unknown key (reported when the config is built)
        cls, tp = _section(f), f.type
    if cls is not None:
        return False  # a whole section (optim={lr: 1})
    tp = _resolve(tp)
    return tp is str or (typing.get_origin(tp) is not None and set(typing.get_args(tp)) == {str, type(None)})


def parse_override(text: str) -> tuple[list[str], Any]:
    """`key=value` as (["section", "key"], value). The value is read as YAML (numbers, true/false,
    lists, null), except that a key declared as text takes the text as typed: run_name=007 is "007"
    (YAML: 7) and run_name=exp #3 keeps its "#3" (YAML: a comment). Text that is not YAML stays text."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. optim.lr=0.05")
    key, raw = text.split("=", 1)
    path, raw = key.strip().split("."), raw.strip()
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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, saved: bool = False) -> Config:
    """Read a YAML config (or start from defaults), apply dotted overrides, check everything.
    `saved`: the file is a run folder's config.yaml (see saved_config_from_dict)."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of sections (data, model, loss, optim, ...)")
    data = apply_overrides(data, overrides or [])
    return saved_config_from_dict(data) if saved else config_from_dict(data)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# Keys that do not change what is learned (check_every: tested bit-identical across values). Like the
# device, compile_mode changes only how the same computation runs (reduce-overhead replays it as CUDA
# graphs), so a GPU run made with it is a seed of the same setting as CPU runs made without.
RUNTIME_KEYS = ("seed", "run_name", "out_dir", "threads", "progress", "tensorboard", "device", "compile_mode",
                "eval.batch_size", "eval.test", "data.workers", "data.root", "data.download", "data.verify", "check_every",
                "loss.check_values")
# Keys that, like the seed, differ between the seeds of one setting: a second stage starts from
# the first-stage run of its own seed.
PER_SEED_KEYS = ("model.init_from",)


# Keys added after configs were first saved in run folders, with the behaviour of the versions that
# had no such key. A saved run config (run folder, results.json) lacking one of them ran like that,
# whatever today's default is; shipped and user configs take today's defaults.
LEGACY_VALUES = {
    "data.autoaugment_shear": "nearest",  # longtail 0.1.0 sheared with nearest sampling
    "data.train_crop": "square",  # list datasets cropped from a centre square before 2026-12-03
}


def saved_config_from_dict(data: dict) -> Config:
    """A config saved by a run (config.yaml in its folder, or results.json), keys it predates filled
    with the values its version behaved with (LEGACY_VALUES), not with today's defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"a saved config must be a mapping of sections, got {type(data).__name__}")
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for dotted, value in LEGACY_VALUES.items():
        *path, last = dotted.split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        node.setdefault(last, value)
    return config_from_dict(data)


def experiment_settings(cfg: Config) -> dict[str, Any]:
    """Every config value that defines the experiment, as {"section.key": value}: all but the seed,
    the runtime keys (RUNTIME_KEYS) and keys that have no effect in this config."""
    flat = {}
    for section, value in cfg.to_dict().items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        flat.update({(f"{section}.{key}" if key else section): v for key, v in items})
    if flat["data.augment"] != "autoaugment":
        del flat["data.autoaugment_shear"]  # no effect without AutoAugment
    if flat["data.augment"] not in LARGE_IMAGE_AUGMENTS or flat["data.name"] in ("cifar10-lt", "cifar100-lt", "digits-lt"):
        del flat["data.train_crop"]  # only list datasets under the large-image recipes crop on decoding
    if flat["optim.schedule"] != "step":
        del flat["optim.milestones"], flat["optim.step_factors"]  # no effect on a cosine schedule
    if not flat["optim.grad_clip"]:
        flat["optim.grad_clip"] = None  # 0 and null both mean no clipping
    # a loss parameter left out runs at the loss's default: the same experiment as giving it
    for key, default in _loss_param_types(cfg.loss.name).items():
        flat.setdefault(f"loss.{key}", default)
    return {k: v for k, v in flat.items() if k not in RUNTIME_KEYS + PER_SEED_KEYS}


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of {"section.key": value} settings: equal settings, equal fingerprints."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def setting_key(cfg: Config) -> str:
    """A fingerprint of experiment_settings: runs with equal keys are seeds of one setting
    (`longtail report` averages them)."""
    return settings_fingerprint(experiment_settings(cfg))
