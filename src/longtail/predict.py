"""Applying a trained classifier to new images, and exporting it (TorchScript / ONNX).

Images are decoded as the evaluation split decodes them (short side to ``resize``, centre crop
``image_size``: :func:`~longtail.data.listfile.decode_image`), normalised with the training mean and
std, and scored as logits minus an optional per-class ``adjustment`` (a post-hoc logit adjustment
such as tau * log(prior); None keeps the raw logits). Probabilities are the softmax of those scores.

:func:`export_model` writes the same scoring as one module that takes the decoded uint8 images,
(N, 3, H, W) at the training size, and returns the adjusted scores, plus a JSON sidecar with the
class names and the input size; the exported file runs without longtail.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import importlib.util
import io
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import posthoc, rundir
from .atomic import write_replacing, write_text_replacing
from .data import LIST_DATASETS
from .data.augment import normalize
from .data.folder import IMAGE_EXTENSIONS, is_image_file
from .data.listfile import decode_image

__all__ = ["find_images", "predict_images", "write_predictions_csv", "ExportedClassifier", "export_model",
           "sidecar_path", "EXPORT_FORMATS", "ADJUSTMENTS", "TrainedRun", "load_trained", "read_prior", "adjustment"]

EXPORT_FORMATS = ("torchscript", "onnx")


# --------------------------------------------------------------------------- finding


def find_images(paths: Iterable[str | os.PathLike]) -> tuple[list[str], list[tuple[str, str]]]:
    """The image files among ``paths``: files as given, folders searched recursively (sorted, hidden
    entries ignored), by extension (:data:`~longtail.data.folder.IMAGE_EXTENSIONS`, any case).

    Returns (files, skipped): skipped holds ``(path, why)`` for files that are not images. Each file
    is listed once, at its first mention. Raises FileNotFoundError for a path that does not exist.
    """
    files: list[str] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.realpath(path)
        if key in seen:
            return
        seen.add(key)
        if is_image_file(path):
            files.append(path)
        else:
            skipped.append((path, f"not an image ({' '.join(IMAGE_EXTENSIONS)})"))

    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            found = []
            for here, dirs, names in os.walk(p, followlinks=True):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                found += [os.path.join(here, n) for n in names if not n.startswith(".")]
            for f in sorted(found):
                add(f)
        elif os.path.isfile(p):
            add(p)
        else:
            raise FileNotFoundError(f"no such image file or folder: {p}")
    return files, skipped


# --------------------------------------------------------------------------- predicting


class _DecodedFiles(torch.utils.data.Dataset):
    """Item i: (i, uint8 (3, S, S) tensor or None, error text or None): a bad file does not stop the batch."""

    def __init__(self, files: Sequence[str], resize: int, image_size: int):
        self.files, self.resize, self.image_size = list(files), resize, image_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return i, decode_image(self.files[i], self.resize, self.image_size), None
        except Exception as e:  # noqa: BLE001 - any decoder failure is reported for that file alone
            return i, None, f"{type(e).__name__}: {e}"


def _as_list(batch):
    return batch


class _Progress:
    """A one-line progress count on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.enabled = enabled and sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        if self.enabled:
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            sys.stderr.write(f"\rpredict: {self.done}/{self.total} images ({rate:.0f}/s)")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _device_of(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def predict_images(model: nn.Module, files: Sequence[str | os.PathLike], *, image_size: int, resize: int,
                   mean: Sequence[float], std: Sequence[float], adjustment: torch.Tensor | None = None,
                   batch_size: int = 64, top_k: int = 5, workers: int = 0,
                   progress: bool = True) -> tuple[list[dict], list[tuple[str, str]]]:
    """Classify image files; returns (rows, failures).

    Each row is ``{"path": str, "top": [(class index, probability), ...]}``, the ``top_k`` classes
    by adjusted score, in the order of ``files``; an image that cannot be decoded is left out and
    its ``(path, reason)`` added to failures. The model runs in eval mode on its own device;
    ``workers`` > 0 decodes in that many DataLoader processes.
    """
    if resize < image_size:
        raise ValueError(f"resize ({resize}) must be >= image_size ({image_size})")
    if batch_size < 1 or top_k < 1:
        raise ValueError(f"batch_size and top_k must be >= 1, got {batch_size} and {top_k}")
    files = [os.fspath(f) for f in files]
    device = _device_of(model)
    adjust = None if adjustment is None else torch.as_tensor(adjustment, dtype=torch.float32).to(device)
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(_DecodedFiles(files, resize, image_size), batch_size=batch_size,
                                         num_workers=workers, collate_fn=_as_list)
    rows: list[dict] = []
    failures: list[tuple[str, str]] = []
    bar = _Progress(len(files), progress)
    try:
        for batch in loader:
            failures += [(files[i], err) for i, _, err in batch if err is not None]
            good = [(i, img) for i, img, err in batch if err is None]
            if good:
                images = torch.stack([img for _, img in good]).to(device, non_blocking=True)
                scores = model(normalize(images, mean, std)).float()
                if adjust is not None:
                    if adjust.shape != scores.shape[1:]:
                        raise ValueError(f"adjustment has shape {tuple(adjust.shape)} but the model gives "
                                         f"{scores.shape[1]} class scores: give one offset per class")
                    scores = scores - adjust
                prob, idx = torch.softmax(scores, dim=1).topk(min(top_k, scores.shape[1]), dim=1)
                for (i, _), p, c in zip(good, prob.cpu().tolist(), idx.cpu().tolist()):
                    rows.append({"path": files[i], "top": list(zip(c, p))})
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    return rows, failures


def write_predictions_csv(rows: Iterable[dict], classes: Sequence[str], out: str | os.PathLike | io.TextIOBase,
                          top_k: int) -> None:
    """CSV with columns ``path,class,probability`` then ``top2_class,top2_probability`` ... up to
    ``top_k`` (at most the number of classes); classes by name. ``out`` is a path or a text stream."""
    k = min(top_k, len(classes))
    header = ["path", "class", "probability"]
    for r in range(2, k + 1):
        header += [f"top{r}_class", f"top{r}_probability"]

    def write(f) -> None:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for row in rows:
            line = [row["path"]]
            for c, p in row["top"][:k]:
                line += [classes[c], f"{p:.6f}"]
            w.writerow(line)

    if isinstance(out, (str, os.PathLike)):
        with open(out, "w", encoding="utf-8", newline="") as f:
            write(f)
    else:
        write(out)


# --------------------------------------------------------------------------- exporting


class ExportedClassifier(nn.Module):
    """uint8 images (N, 3, H, W), RGB at the training size -> adjusted class scores (N, C), float32.

    Scores = model((images / 255 - mean) / std) - adjustment; softmax gives probabilities.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float],
                 adjustment: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        offsets = torch.zeros(()) if adjustment is None else torch.as_tensor(adjustment, dtype=torch.float32)
        self.register_buffer("adjustment", offsets.detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() * (1.0 / 255.0) - self.mean) / self.std
        return self.model(x).float() - self.adjustment


def sidecar_path(model_path: str | os.PathLike) -> Path:
    """The JSON beside an exported model: same stem, ``.json`` (``model.pt`` -> ``model.json``)."""
    return Path(model_path).with_suffix(".json")


def _size_pair(input_size) -> tuple[int, int]:
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    return int(h), int(w)


@contextlib.contextmanager
def _quiet_jit():
    """TorchScript is what was asked for: its deprecation notices would only be noise here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated", category=DeprecationWarning)
        yield


def _write_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with _quiet_jit():
        traced = torch.jit.trace(module, example, check_trace=False)  # export_model checks the file itself
        torch.jit.save(traced, str(path))


def _write_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    quiet = logging.getLogger("torch.onnx")  # it logs a warning per torchvision operator it cannot register
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
            torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=["scores"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, external_data=False,
                              verbose=False)
    finally:
        quiet.setLevel(level)


def _run_exported(path: Path, fmt: str, images: torch.Tensor) -> torch.Tensor | None:
    """Scores from the written file (None for ONNX when onnxruntime is not installed)."""
    if fmt == "torchscript":
        with _quiet_jit():
            return torch.jit.load(str(path))(images)
    try:
        import onnxruntime
    except ImportError:
        return None
    runner = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(runner.run(None, {"images": images.numpy()})[0])


def export_model(model: nn.Module, out_path: str | os.PathLike, *, fmt: str, classes: Sequence[str], input_size,
                 mean: Sequence[float], std: Sequence[float], adjustment: torch.Tensor | None = None,
                 adjust_name: str | None = None, tau: float | None = None,
                 resize: int | None = None) -> tuple[Path, Path]:
    """Write ``model`` as one file that scores uint8 images, and its JSON sidecar; returns both paths.

    ``fmt`` "torchscript" (``torch.jit.load`` runs it, no longtail needed) or "onnx" (one file, a
    dynamic batch axis; input "images", output "scores"). ``input_size`` is the training crop, an int
    or (H, W). The sidecar (:func:`sidecar_path`) holds ``classes``, ``input_size``, ``resize`` (the
    short side images are resized to before the centre crop), ``adjust`` (``adjust_name``), ``tau``,
    ``format``, ``mean`` and ``std`` (already applied inside the model). The written file is run on
    a batch of a different size and checked against the model before this returns. A sidecar that
    already describes another model file of the same stem (``model.pt``'s ``model.json`` when
    writing ``model.onnx``) is not overwritten: FileExistsError, before anything is written.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "onnx" and not all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript")):
        raise ImportError("ONNX export needs the packages onnx and onnxscript: pip install 'longtail[export]' "
                          "(or export with fmt='torchscript')")
    out_path = Path(out_path)
    if out_path.suffix.lower() == ".json":
        raise ValueError(f"{out_path}: the model file may not end in .json (its sidecar is written as .json); "
                         "use .pt for torchscript or .onnx for onnx")
    side = sidecar_path(out_path)
    if side.is_file() and out_path.parent.is_dir():
        # model.pt and model.onnx would share model.json: the second export would rewrite the first one's
        # description (its format, adjustment and tau) under it
        owners = sorted(p.name for p in out_path.parent.iterdir() if p.stem == out_path.stem and p.name != out_path.name
                        and p.suffix.lower() != ".json" and p.is_file())
        if owners:
            raise FileExistsError(f"{side} already describes {out_path.parent / owners[0]} (a model and its sidecar share "
                                  f"the name before the suffix): give {out_path.name} another name, e.g. "
                                  f"{out_path.stem}-{fmt}{out_path.suffix}, or remove {owners[0]} first")
    h, w = _size_pair(input_size)
    wrapped = ExportedClassifier(copy.deepcopy(model).cpu().float().eval(), mean, std,
                                 None if adjustment is None else torch.as_tensor(adjustment).cpu()).eval()
    gen = torch.Generator().manual_seed(0)
    example = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8, generator=gen)
    check = torch.randint(0, 256, (3, 3, h, w), dtype=torch.uint8, generator=gen)
    with torch.no_grad():
        expected = wrapped(check)
    if expected.shape[1] != len(classes):
        raise ValueError(f"the model gives {expected.shape[1]} class scores but {len(classes)} class names were "
                         "given: pass the classes the model was trained on")
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def write_checked(tmp: Path) -> None:
        with torch.no_grad():
            (_write_torchscript if fmt == "torchscript" else _write_onnx)(wrapped, example, tmp)
            got = _run_exported(tmp, fmt, check)
        if got is not None and not torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * (1 + float(expected.abs().max()))):
            raise RuntimeError(f"the exported {fmt} model differs from the model by up to "
                               f"{(got - expected).abs().max():.3g} on a batch of 3: it cannot be trusted")
    write_replacing(out_path, write_checked)
    meta = {"classes": list(classes), "input_size": [h, w], "resize": resize, "adjust": adjust_name,
            "tau": tau, "format": fmt, "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            "input": "uint8 RGB images (N, 3, H, W): short side to `resize`, centre crop `input_size`",
            "output": "class scores (N, C): logits minus the adjustment; softmax gives probabilities"}
    write_text_replacing(side, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return out_path, side


# --------------------------------------------------------------------------- a trained run

ADJUSTMENTS = ("auto", "none", "pr", "la")


@dataclass
class TrainedRun:
    """A finished run, ready to score new images: its selected model (best.pt) and what predicting
    needs of its data (class names and training counts, normalisation, sizes), its results (the taus
    chosen on validation) and its validation logits (prediction re-balancing's class marginal)."""

    run_dir: Path
    model: nn.Module
    results: dict
    classes: list[str]
    class_counts: list[int]
    mean: list[float]
    std: list[float]
    image_size: int
    resize: int
    val_logits: torch.Tensor | None


def load_trained(run: str | os.PathLike, device: torch.device | str = "cpu") -> TrainedRun:
    """The finished run folder `run` (results.json and best.pt, else last.pt)."""
    run_dir = Path(run)
    if not (run_dir / "results.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished run folder (no results.json): predict and export use a "
                                "run that `longtail train` completed")
    results = json.loads((run_dir / "results.json").read_text())
    if "data" not in results or not results.get("checkpoints"):
        raise ValueError(f"{run_dir}: its results.json lacks the test figures and taus predicting needs (a "
                         "validation-only run, made with eval.test=false); train the setting with eval.test=true")
    cfg, ckpt, path = rundir.load_run(run_dir)
    data = results["data"]
    model = rundir.load_model(cfg, ckpt, path, len(data["classes"]), len(data["mean"]), torch.device(device))
    stored = rundir.load_logits(run_dir) if (run_dir / "logits.npz").is_file() else {}
    val = stored.get("val", (None, None))[0]
    return TrainedRun(run_dir, model, results, data["classes"], data["class_counts"], data["mean"], data["std"],
                      data["image_size"], data["resize"] if cfg.data.name in LIST_DATASETS else data["image_size"], val)


def read_prior(text: str, classes: Sequence[str], class_counts: Sequence[int]) -> torch.Tensor:
    """The class prior expected where the model is used: "uniform", "train" (the training
    frequencies), or a file of `class,weight` lines (every class named once, weights positive)."""
    if text == "uniform":
        return torch.full((len(classes),), 1.0 / len(classes), dtype=torch.float64)
    if text == "train":
        counts = torch.tensor(class_counts, dtype=torch.float64)
        return counts / counts.sum()
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"--prior {text}: give uniform, train, or a file of `class,weight` lines")
    index = {name: i for i, name in enumerate(classes)}
    weights = torch.zeros(len(classes), dtype=torch.float64)
    for n, row in enumerate(csv.reader(path.read_text(encoding="utf-8").splitlines()), 1):
        if not row or not "".join(row).strip():
            continue
        name, value = (row + [""])[:2]
        try:
            weights[index[name.strip()]] = float(value)
        except (KeyError, ValueError):
            raise ValueError(f"{path}:{n}: expected `class,weight` with one of the run's classes and a number, got "
                             f"{','.join(row)!r}") from None
    missing = [classes[i] for i in range(len(classes)) if not weights[i] > 0]
    if missing:
        raise ValueError(f"{path}: every class needs a positive weight; missing or not positive: {missing[:5]}")
    return weights / weights.sum()


def adjustment(run: TrainedRun, adjust: str = "auto", prior: str = "uniform") -> tuple[torch.Tensor, str, float | None]:
    """The per-class offsets subtracted from the logits, and the adjustment's name and tau.

    adjust: "pr" (prediction re-balancing with the validation marginal and the tau chosen on
    validation), "la" (post-hoc logit adjustment, tau from validation), "none", or "auto": whichever
    of the three scored best on validation (ties: the simpler). Each makes the scores fit a uniform
    class prior; `prior` then moves them toward the prior expected where the model is used
    (`read_prior`): offsets - log q."""
    if adjust not in ADJUSTMENTS:
        raise ValueError(f"--adjust {adjust!r}: choose one of {', '.join(ADJUSTMENTS)}")
    chosen = run.results["checkpoints"].get("best_val") or run.results["checkpoints"]["last"]
    if adjust == "auto":
        scored = {"none": run.results["best_val"]["top1"], **{k: chosen[k]["val_top1"] for k in ("la", "pr") if k in chosen}}
        # the simplest within 1e-4 of the best: the raw figure is a float32 fraction and the others float64, so
        # one accuracy (5 of 12) reads 41.66666567 and 41.66666667, and a tie must still go to the simpler
        adjust = next(k for k, v in scored.items() if v >= max(scored.values()) - 1e-4)
    offsets, tau = torch.zeros(len(run.classes), dtype=torch.float64), None
    if adjust in ("pr", "la"):
        if adjust not in chosen:
            raise ValueError(f"{run.run_dir} has no {adjust} tau (its run had no validation split): use --adjust none")
        tau = float(chosen[adjust]["tau"])
        if adjust == "la":
            counts = torch.tensor(run.class_counts, dtype=torch.float64)
            offsets = tau * (counts / counts.sum()).log()
        else:
            if run.val_logits is None:
                raise ValueError(f"{run.run_dir} has no logits.npz to take prediction re-balancing's class marginal "
                                 "from: use --adjust la or none")
            offsets = tau * posthoc.class_marginal(run.val_logits).log()
    offsets = offsets - read_prior(prior, run.classes, run.class_counts).log()
    return (offsets - offsets.mean()).float(), adjust, tau
