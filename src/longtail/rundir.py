"""The run folder: what a run writes and what is read back from it.

    runs/<run>/config.yaml        the resolved config             (written at the start)
               environment.json   where and how it was made       (at the start)
               metrics.jsonl      one JSON line per epoch
               last.pt, best.pt   checkpoints, written atomically (each epoch; best on validation)
               train.txt ...      an image folder's split, as list files
               logits.npz         the selected checkpoint's validation and test logits (float16)
               results.json       the final figures: its presence marks a finished run
               results.md, per_class.png

Every .pt is read with `safe_load.load_tensors` (nothing in it can run code), and every file that
matters is written whole or not at all (a temp file, then a rename): a crash, a full disk or a stop
request leaves the previous version.
"""
from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from longtail import __version__, distributed, models
from longtail.atomic import write_replacing
from longtail.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    keys_where,
    override_key,
    read_yaml,
    resolve,
    save_config,
)
from longtail.evaluation import resolve_precision
from longtail.safe_load import UnsafeFileError, load_tensors

__all__ = ["CheckpointWriteError", "atomic_save", "read_checkpoint", "new_run_dir",
           "refuse_existing_run", "start_run_dir", "environment_info", "made_on", "run_precision", "MetricsLog",
           "write_results", "save_logits", "load_logits", "resume_config", "find_checkpoint", "load_run",
           "load_model", "RESUMABLE_KEYS"]


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, ...); the previous one is intact."""


# ----------------------------------------------------------------------------- writing and reading files

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


def read_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint written by `longtail train`; a damaged or foreign file is a ValueError naming it,
    one carrying code an UnsafeFileError (nothing in it is run)."""
    try:
        ckpt = load_tensors(path, map_location)
    except (OSError, UnsafeFileError):
        raise
    except Exception as exc:  # torch.load's errors for a bad file vary: zip, pickle, EOF
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path} is not a readable checkpoint (truncated or damaged?): {detail}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ValueError(f"{path} is not a longtail checkpoint (no 'model' weights in it)")
    return ckpt


# ----------------------------------------------------------------------------- starting a run

def new_run_dir(cfg: Config) -> Path:
    name = cfg.run_name or f"{cfg.data.name}-{cfg.loss.name}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.out_dir) / name


def refuse_existing_run(run_dir: Path) -> None:
    """A folder holding a run is never trained into again. A finished run's results, even without
    its last.pt (deleted to save space), are kept; a folder with only best.pt (killed before the
    first last.pt) holds nothing to continue or keep."""
    if (run_dir / "results.json").exists():
        raise FileExistsError(f"{run_dir} holds a finished run (results.json): `longtail eval {run_dir}` evaluates it "
                              "again; to train anew, give another folder (--run-dir, or run_name=...)")
    if (run_dir / "last.pt").exists():
        raise FileExistsError(f"{run_dir} holds an unfinished run (last.pt): continue it with `longtail train "
                              f"--resume {run_dir}`, or give another folder (--run-dir, or run_name=...)")


def environment_info(rt: distributed.Runtime, cfg: Config) -> dict:
    info = {"longtail": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "device": str(rt.device), "world_size": rt.world_size,
            "threads": torch.get_num_threads(), "seed": cfg.seed, "argv": sys.argv,
            "precision": resolve_precision(cfg.precision, rt.device)}
    if rt.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(rt.device)
    return info


def start_run_dir(run_dir: Path, cfg: Config, environment: dict) -> None:
    """A new run's folder: its config and environment. What a run killed before its first last.pt
    left there (best.pt, and whatever was evaluated from it) goes: it is not this run's."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in [run_dir / "best.pt", run_dir / "logits.npz", *run_dir.glob("eval-*.json")]:
        stale.unlink(missing_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    (run_dir / "environment.json").write_text(json.dumps(environment, indent=2))


def _started(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / "environment.json").read_text())
    except (OSError, ValueError):  # missing or damaged: say nothing rather than lose a finished run
        return None


def run_precision(cfg: Config, run_dir: Path, device: torch.device) -> str:
    """The precision an existing run folder's run trains and evaluates in. "auto" depends on the
    machine, so it means the precision the run started with (a run resumed or evaluated on another
    machine is not trained half in fp32 and half in bf16); an explicit precision is kept."""
    started = (_started(run_dir) or {}).get("precision") if cfg.precision == "auto" else None
    return started or resolve_precision(cfg.precision, device)


def made_on(run_dir: Path, rt: distributed.Runtime, cfg: Config, precision: str) -> dict:
    """Where a run was made: the precision it trained in, the machine it started on and, when a
    resume moved it, the one it finished on; archived seeds made on different machines say so."""
    started = _started(run_dir)
    now = {k: v for k, v in environment_info(rt, cfg).items() if k not in ("argv", "seed", "precision")}
    if started is None or any(started.get(k) != v for k, v in now.items()):
        return {"precision": precision, "started": started, "finished": now}
    return {"precision": precision, "started": started}


# ----------------------------------------------------------------------------- during and after a run

class MetricsLog:
    """metrics.jsonl: one JSON line per epoch, appended. Opened for a resume, it keeps the lines of
    the epochs the checkpoint holds; a line cut short (a kill or a full disk while it was written) is
    dropped with a warning: last.pt, not the log, is what the run resumes."""

    def __init__(self, run_dir: Path, resume_from_epoch: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if resume_from_epoch is not None:
            self._trim(resume_from_epoch)
        self.file = open(self.path, "a" if resume_from_epoch is not None else "w")

    def _trim(self, epochs_done: int) -> None:
        keep, broken = [], 0
        lines = self.path.read_text(errors="replace").splitlines() if self.path.exists() else []
        for line in lines:
            if not line.strip():
                continue
            try:
                epoch = int(json.loads(line)["epoch"])
            except (ValueError, KeyError, TypeError):
                broken += 1
                continue
            if epoch <= epochs_done:
                keep.append(line)
        if broken:
            print(f"warning: dropped {broken} unreadable line(s) from {self.path}", file=sys.stderr, flush=True)
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def write_results(run_dir: Path, results: dict, markdown: str) -> None:
    """results.md, then results.json last, whole or not at all: it marks a finished run."""
    (run_dir / "results.md").write_text(markdown)
    write_replacing(run_dir / "results.json", lambda tmp: tmp.write_text(json.dumps(results, indent=2)))


def save_logits(run_dir: Path, preds: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """The validation and test logits (float16) and labels, compressed: post-hoc studies (shifted
    priors, other adjustments) need no retraining. About 2 MB for CIFAR-100's 12,000 images."""
    arrays = {}
    for split, (logits, labels) in preds.items():
        arrays[f"{split}_logits"] = logits.to(torch.float16).numpy()
        arrays[f"{split}_labels"] = labels.to(torch.int32).numpy()
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    write_replacing(run_dir / "logits.npz", write)


def load_logits(run_dir: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """logits.npz as {"val"/"test": (float32 logits, int64 labels)}."""
    with np.load(Path(run_dir) / "logits.npz", allow_pickle=False) as f:
        return {split: (torch.from_numpy(f[f"{split}_logits"].astype(np.float32)),
                        torch.from_numpy(f[f"{split}_labels"].astype(np.int64)))
                for split in ("val", "test") if f"{split}_logits" in f}


# ----------------------------------------------------------------------------- reading a run back

RESUMABLE_KEYS = keys_where("resumable")


def resume_config(run_dir: str | Path, overrides: list[str] | None = None) -> Config:
    """The config saved in a run folder, with the overrides a resume allows (RESUMABLE_KEYS)."""
    run_dir = Path(run_dir)
    if (run_dir / "results.json").exists():  # written only when a run has trained and been evaluated
        raise FileExistsError(f"{run_dir} is finished (it holds results.json); nothing to resume. "
                              f"`longtail eval {run_dir}` evaluates it again")
    if not (run_dir / "last.pt").exists():
        backup = ("; its best.pt is a whole checkpoint too (of the best epoch on validation): copy it to last.pt to "
                  "resume from that epoch" if (run_dir / "best.pt").exists() else "")
        raise FileNotFoundError(f"{run_dir} has no last.pt checkpoint to resume from{backup}")
    for text in overrides or []:
        name = override_key(text)
        if name not in RESUMABLE_KEYS:
            raise ConfigError(f"{name} cannot change on --resume (it would change the result); only "
                              f"{', '.join(RESUMABLE_KEYS)} can")
    return _saved_config(read_yaml(run_dir / "config.yaml"), run_dir / "config.yaml", overrides)


def _saved_config(data: dict, source: Path, overrides: list[str] | None) -> Config:
    """A run's saved config with `overrides` on top; a saved config this version cannot read is named,
    with the version that wrote it where the run recorded one."""
    try:
        config_from_dict(data)
    except ConfigError as exc:
        env = source.parent / "environment.json"
        made = json.loads(env.read_text()).get("longtail") if source.name == "config.yaml" and env.is_file() else None
        made = f"; the run was made with {made}" if made and made != __version__ else ""
        raise ConfigError(f"{source} does not load in this version of longtail ({__version__}{made}): {exc}; "
                          "use the version that made the run") from None
    return resolve(config_from_dict(apply_overrides(data, overrides or [])))


def find_checkpoint(target: str | Path) -> Path:
    """A run folder's best.pt (else last.pt), or a .pt file itself."""
    target = Path(target)
    path = target
    if target.is_dir():
        path = target / "best.pt" if (target / "best.pt").exists() else target / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (give a run folder or a .pt file written by `longtail train`)")
    return path


def load_run(target: str | Path, overrides: list[str] | None = None) -> tuple[Config, dict, Path]:
    """(config, checkpoint, checkpoint path) of a run folder or a .pt file, read before any data
    loads, so a bad file fails at once. The config is the run folder's, else the one inside a .pt
    moved out of its folder; `overrides` apply on top (data.root=/elsewhere, ...)."""
    path = find_checkpoint(target)
    ckpt = read_checkpoint(path)
    saved = path.parent / "config.yaml"
    if saved.is_file():
        data = read_yaml(saved)
    elif isinstance(ckpt.get("config"), dict):
        data = ckpt["config"]
    else:
        raise FileNotFoundError(f"{path} holds no config and {saved} does not exist")
    return _saved_config(data, saved if saved.is_file() else path, overrides), ckpt, path


def load_model(cfg: Config, ckpt: dict, path: Path, num_classes: int, channels: int, device) -> torch.nn.Module:
    """The model a run's checkpoint holds, in eval mode and in the memory format it trained in (so an
    evaluation computes what the run's own final evaluation did)."""
    model = models.build_model(cfg.model.name, num_classes, head=cfg.model.head, scale=cfg.model.scale,
                               in_channels=channels).to(device)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError(f"the weights in {path} do not fit the model its config builds (an override that changes "
                         f"the model or the classes?): {str(exc).splitlines()[0]}") from None
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.eval()
