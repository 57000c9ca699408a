"""Long-tailed benchmarks behind one entry point, :func:`load_benchmark`.

Small datasets (CIFAR-LT, digits) come back as :class:`TensorSplit` (one uint8 tensor, to be moved
to the training device and augmented there in batches); large ones (ImageNet-LT, Places-LT,
iNaturalist 2018, your own list files) as :class:`~longtail.data.listfile.ListDataset` for a
DataLoader. Every benchmark's ``class_counts`` are the TRAINING counts per class.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .cifar import CifarSplit, download_cifar, find_cifar_dir, load_cifar
from .digits import load_digits_lt
from .imbalance import (
    balanced_validation_indices,
    limit_per_class,
    lt_counts,
    select_lt_indices,
    split_validation,
)
from .listfile import ListDataset, ListReport, check_list, class_counts_from_list, read_list

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "TensorSplit",
    "load_benchmark",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LIST_BENCHMARKS",
    # re-exports
    "CifarSplit",
    "load_cifar",
    "find_cifar_dir",
    "download_cifar",
    "lt_counts",
    "select_lt_indices",
    "balanced_validation_indices",
    "split_validation",
    "limit_per_class",
    "read_list",
    "class_counts_from_list",
    "ListDataset",
    "ListReport",
    "check_list",
    "load_digits_lt",
]

BENCHMARKS = ("cifar10-lt", "cifar100-lt", "imagenet-lt", "places-lt", "inat2018", "digits-lt", "lists")

# SPEC section 5 (the GALA recipe's normalisation, used for both CIFARs).
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TensorSplit:
    """A small dataset held as one tensor (on any device)."""

    images: torch.Tensor  # uint8 (N, C, H, W)
    labels: torch.Tensor  # int64 (N,)
    source_indices: torch.Tensor | None = None  # positions in the source file (stays on the CPU)

    def __post_init__(self):
        if self.images.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device, non_blocking: bool = False) -> TensorSplit:
        return TensorSplit(self.images.to(device, non_blocking=non_blocking),
                           self.labels.to(device, non_blocking=non_blocking), self.source_indices)


@dataclass
class Benchmark:
    name: str
    num_classes: int
    class_counts: list[int]  # TRAINING counts per class
    train: TensorSplit | ListDataset
    val: TensorSplit | ListDataset | None
    test: TensorSplit | ListDataset
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    class_names: list[str] | None = None


# name -> (display name, folder in a splits directory, train/val/test list names, classes,
#          where to get the images)
LIST_BENCHMARKS = {
    "imagenet-lt": ("ImageNet-LT", "ImageNet_LT",
                    ("ImageNet_LT_train.txt", "ImageNet_LT_val.txt", "ImageNet_LT_test.txt"), 1000,
                    "the ILSVRC2012 images (its train/ and val/ folders)"),
    "places-lt": ("Places-LT", "Places_LT",
                  ("Places_LT_train.txt", "Places_LT_val.txt", "Places_LT_test.txt"), 365,
                  "the Places365-Standard images (its train/ and val/ folders)"),
    # iNaturalist 2018 has no public test labels: the community reports on the official val list.
    "inat2018": ("iNaturalist 2018", "iNaturalist18",
                 ("iNaturalist18_train.txt", None, "iNaturalist18_val.txt"), 8142,
                 "the iNaturalist 2018 images (its train_val2018/ folder)"),
}
_LIST_SOURCE = ("the standard lists are in facebookresearch/classifier-balancing (data/<dataset>/) "
                "and the OLTR release")


def _find_list(kind: str, given, default_name: str | None, subfolder: str, search_dirs: list[Path],
               display: str) -> Path | None:
    """Resolve a list-file argument: a file, a folder holding the standard name, or None (search)."""
    given = Path(given).expanduser() if given is not None else None
    if given is not None and not given.is_dir():
        if not given.is_file():
            raise FileNotFoundError(f"{display} {kind} list not found: {given}; pass data.{kind}_list=/path/to/list.txt")
        return given
    if default_name is None:
        if given is not None:  # a folder, but no standard file name to look for in it
            what = "no standard file names" if display == "lists" else f"no standard {kind} list"
            raise FileNotFoundError(
                f"{display} {kind} list: {given} is a folder, and {display} has {what} to look for in it; "
                f"pass the file itself, data.{kind}_list=/path/to/{kind}.txt"
            )
        return None
    dirs = [given] if given is not None else search_dirs
    tried = []
    for d in dirs:
        for p in (d / default_name, d / subfolder / default_name):
            tried.append(p)
            if p.is_file():
                return p
    raise FileNotFoundError(
        f"{display} {kind} list {default_name} not found (looked in: {', '.join(map(str, tried))}). "
        f"Put it in one of those places or pass data.{kind}_list=/path/to/{default_name} "
        f"(a folder holding it works too); {_LIST_SOURCE}"
    )


def _cifar_benchmark(name, root, imb_factor, val_per_class, val_seed, lt_seed, download, verify,
                     limit, limit_eval, val_shortfall) -> Benchmark:
    dataset = "cifar10" if name == "cifar10-lt" else "cifar100"
    C, n_max = (10, 5000) if dataset == "cifar10" else (100, 500)
    root = Path(root) if root is not None else Path("data")
    try:
        tr = load_cifar(root, dataset, "train", download=download, verify=verify)
    except FileNotFoundError as e:
        where = "" if root.is_absolute() else f", relative to the working folder {Path.cwd()}"
        raise FileNotFoundError(f"{e}. Set data.root to the folder that holds the data (now {root}{where})") from None
    te = load_cifar(root, dataset, "test", verify=verify)
    counts = lt_counts(n_max, C, imb_factor)
    lt_idx = select_lt_indices(tr.labels, counts, seed=lt_seed)
    val = None
    if val_per_class > 0:
        lt_idx, val_idx, _ = split_validation(tr.labels, lt_idx, val_per_class, seed=val_seed, num_classes=C,
                                              shortfall=val_shortfall)
        val = _take(tr, limit_per_class(tr.labels, val_idx, limit_eval))
    train_idx = limit_per_class(tr.labels, lt_idx, limit)
    test_idx = limit_per_class(te.labels, np.arange(len(te)), limit_eval)
    train = _take(tr, train_idx)
    return Benchmark(
        name=name, num_classes=C, class_counts=np.bincount(tr.labels.numpy()[train_idx], minlength=C).tolist(),
        train=train, val=val, test=_take(te, test_idx), mean=CIFAR_MEAN, std=CIFAR_STD, image_size=32,
        class_names=tr.class_names,
    )


def _take(split: CifarSplit, idx: np.ndarray) -> TensorSplit:
    t = torch.from_numpy(np.asarray(idx, dtype=np.int64))
    return TensorSplit(split.images[t].contiguous(), split.labels[t].contiguous(), t)


def _digits_benchmark(imb_factor, val_per_class, seed, limit, limit_eval) -> Benchmark:
    d = load_digits_lt(imb_factor=imb_factor, val_per_class=val_per_class, seed=seed)

    def split(images, labels, idx, k):
        keep = torch.from_numpy(limit_per_class(labels, np.arange(len(labels)), k))
        return TensorSplit(images[keep], labels[keep], idx[keep])

    train = split(d.train_images, d.train_labels, d.train_idx, limit)
    val = split(d.val_images, d.val_labels, d.val_idx, limit_eval) if len(d.val_labels) else None
    x = d.train_images.float() / 255.0
    return Benchmark(
        name="digits-lt", num_classes=10, class_counts=np.bincount(train.labels.numpy(), minlength=10).tolist(),
        train=train, val=val, test=split(d.test_images, d.test_labels, d.test_idx, limit_eval),
        mean=(float(x.mean()),), std=(float(x.std()),), image_size=8, class_names=[str(i) for i in range(10)],
    )


def _list_benchmark(name, root, train_list, val_list, test_list, image_size, resize, limit, limit_eval,
                    train_crop, train_pad) -> Benchmark:
    if name == "lists":
        display, subfolder, (tr_name, va_name, te_name), C, what = "lists", "", (None, None, None), None, \
            "the images your list files refer to"
    else:
        display, subfolder, (tr_name, va_name, te_name), C, what = LIST_BENCHMARKS[name]
    if root is None or not Path(root).expanduser().is_dir():
        where = "not set" if root is None else f"{root} is not a folder"
        raise FileNotFoundError(
            f"{display} image root {where}: set data.root to the folder that holds {what} "
            f"(command line: data.root=/path/to/images); the paths in the list files are relative to it"
        )
    root = Path(root).expanduser()
    dirs = [d for d in (Path(a).expanduser() for a in (train_list, val_list, test_list) if a is not None) if d.is_dir()]
    dirs += [root, root / "splits"]
    if name == "lists":
        for kind, arg in (("train", train_list), ("test", test_list)):
            if arg is None:
                raise ValueError(f"benchmark 'lists' needs data.{kind}_list=/path/to/{kind}.txt ('relative/path label' lines)")
    tr_path = _find_list("train", train_list, tr_name, subfolder, dirs, display)
    # An explicit val list is used even where the benchmark has none by default (iNaturalist).
    va_path = _find_list("val", val_list, va_name, subfolder, dirs, display) if (val_list or va_name) else None
    te_path = _find_list("test", test_list, te_name, subfolder, dirs, display)
    train = ListDataset(root, tr_path, C, train=True, image_size=image_size, resize=resize, limit_per_class=limit,
                        crop=train_crop, pad=train_pad)
    C = train.num_classes
    counts = train.class_counts
    empty = [c for c, n in enumerate(counts) if n == 0]
    if empty:
        raise ValueError(
            f"{tr_path}: {len(empty)} of {C} classes have no training images (first: {empty[:10]}); "
            "labels must be 0..C-1 with every class present — renumber the labels"
        )
    kw = dict(train=False, image_size=image_size, resize=resize, limit_per_class=limit_eval)
    val = ListDataset(root, va_path, C, **kw) if va_path is not None else None
    test = ListDataset(root, te_path, C, **kw)
    return Benchmark(name=name, num_classes=C, class_counts=counts, train=train, val=val, test=test,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=image_size)


def load_benchmark(name: str, root: str | os.PathLike | None = None, *, imb_factor: float | None = None,
                   val_per_class: int | None = None, seed: int = 0, download: bool = False,
                   train_list=None, val_list=None, test_list=None, image_size: int = 224, resize: int = 256,
                   limit_per_class: int | None = None, limit_eval_per_class: int | None = None,
                   val_seed: int | None = None, lt_seed: int = 0, val_shortfall: str = "move",
                   verify: bool = True, train_crop: str = "square", train_pad: int = 0) -> Benchmark:
    """Build a benchmark by name (one of :data:`BENCHMARKS`).

    cifar10-lt / cifar100-lt: ``root`` holds ``cifar-10-batches-py/`` / ``cifar-100-python/`` (or the
      official archive; default ``./data``; ``download=True`` fetches and verifies it). Train: the
      community's IF-``imb_factor`` subset (LDAM-DRW selection with ``lt_seed``, default 0 = the
      published subset). Val: ``val_per_class`` images per class from the training images left out
      of the subset, fixed by ``seed``/``val_seed`` (default 0) so it is the same for every training seed;
      ``val_per_class=0`` gives no validation set (and the exact published training subset).
      The head class keeps all its images in the subset, so it has none left over:
      ``val_shortfall="move"`` (default) moves the missing ones (the last of its selection) from
      training to validation, so CIFAR-100-LT IF100 trains on 10,827 images (class 0: 480) with
      validation balanced and disjoint; ``"error"`` refuses instead (see
      :func:`~longtail.data.imbalance.split_validation`). Test: the official test set. Tensors, 32x32.
    imagenet-lt / places-lt / inat2018: ``root`` is the image root the list paths are relative to.
      ``train_list``/``val_list``/``test_list`` are list files, or folders holding the standard
      names (e.g. ``Places_LT_train.txt``, directly or in a ``Places_LT/`` subfolder); when not given,
      the standard names are looked up in any folder passed for another list, then in ``root`` and
      ``root/splits``. iNaturalist 2018 is tested on its official val list and has no validation set
      unless ``val_list`` is given. ListDatasets: eval items (3, image_size, image_size); train
      items (3, resize, resize) with ``train_crop="square"``, or with ``"random_resized"`` (what
      training with the "imagenet" augmentation uses) RandomResizedCrop(image_size) from the
      whole image as each is decoded, (3, image_size, image_size); ``train_pad`` > 0 reflect-pads
      the image by that many pixels before that crop (4 in the "imagenet_randaugment" recipe).
    lists: your own ``train_list`` and ``test_list`` (``val_list`` optional); classes = max label + 1.
    digits-lt: the embedded scikit-learn digits (root ignored), 50 test images per class.

    ``imb_factor`` / ``val_per_class`` default (None) to the benchmark's own: 100 / 20 for CIFAR,
    20 / 10 for digits; the list benchmarks have their imbalance fixed by the lists.

    ``limit_per_class`` / ``limit_eval_per_class`` keep only the first k images per class of the
    training / validation and test sets (tiny runs; ``class_counts`` reflect the cap).
    ``seed`` / ``val_seed`` (an alias that wins when given) fix the validation split (and the digits
    splits), default 0. Keep them fixed across training seeds: the data must not change between
    runs that are compared. The CIFAR-LT training subset depends only on ``lt_seed`` (default 0, the
    published one). ``verify`` checks the CIFAR files' official MD5s.
    """
    key = name.lower()
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    for arg, v in (("limit_per_class", limit_per_class), ("limit_eval_per_class", limit_eval_per_class)):
        if v is not None and v < 1:
            raise ValueError(f"{arg} must be >= 1 or None, got {v}")
    is_digits = key == "digits-lt"
    if imb_factor is None:
        imb_factor = 20 if is_digits else 100
    if val_per_class is None:
        val_per_class = 10 if is_digits else 20
    if val_per_class < 0:
        raise ValueError(f"val_per_class must be >= 0, got {val_per_class}")
    for arg, v in (("seed", seed), ("val_seed", val_seed), ("lt_seed", lt_seed)):
        # numpy's legacy seeding (the LT subset) takes 0 <= seed < 2**32, as the config does
        if v is not None and not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < 2**32):
            raise ValueError(f"{arg} must be an integer in [0, 2**32), got {v!r}")
    split_seed = seed if val_seed is None else val_seed
    if key in ("cifar10-lt", "cifar100-lt"):
        return _cifar_benchmark(key, root, imb_factor, val_per_class, split_seed, lt_seed, download, verify,
                                limit_per_class, limit_eval_per_class, val_shortfall)
    if key == "digits-lt":
        return _digits_benchmark(imb_factor, val_per_class, split_seed, limit_per_class, limit_eval_per_class)
    return _list_benchmark(key, root, train_list, val_list, test_list, image_size, resize,
                           limit_per_class, limit_eval_per_class, train_crop, train_pad)
