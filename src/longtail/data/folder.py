"""Image folders: one sub-folder per class, turned into list files.

Two layouts are accepted::

    DIR/<class>/.../<image>                  one folder per class; split here (split_folder)
    DIR/train/<class>/.../<image>            already split: train/ and test/ required,
    DIR/val/<class>/.../<image>              val/ optional (without it, validation is drawn
    DIR/test/<class>/.../<image>             from train/ by split_folder)

A folder is taken as already split when it has a ``train`` sub-folder. Images are found recursively
inside each class folder, by extension (:data:`IMAGE_EXTENSIONS`, any case); other files are listed
as skipped, hidden files and folders (a leading dot) are ignored. Class names are the class folder
names, sorted, so label ids do not depend on the file system; ``val/`` and ``test/`` use the classes
of ``train/`` (a class may be missing there, but a class they hold must have training images).
:func:`scan_folder` also decodes every image once: one that does not decode (truncated, corrupt, not
really an image) is left out and listed as skipped with the decoder's reason, as ``longtail data
check DIR`` reports it (a run prints it as a note), so a run trains on the readable images instead of
stopping at the first bad one mid-epoch.

:func:`scan_folder` reads the tree, :func:`split_folder` makes a seeded stratified split,
:func:`write_split_lists` writes ``train.txt``/``val.txt``/``test.txt``/``classes.txt`` that
:class:`~longtail.data.listfile.ListDataset` reads (with ``DIR`` as the image root), and
:func:`check_folder` audits a folder the way :func:`~longtail.data.listfile.check_list` audits a list.
"""

from __future__ import annotations

import math
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..atomic import write_text_replacing
from ..threads import usable_cpus
from .listfile import _check_image, report_section

__all__ = ["IMAGE_EXTENSIONS", "SPLIT_NAMES", "is_image_file", "FolderScan", "scan_folder", "SmallClass",
           "FolderSplit", "split_folder", "write_split_lists", "read_classes", "FolderReport", "check_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SPLIT_NAMES = ("train", "val", "test")
_LAYOUT = "DIR/<class>/<image> (one sub-folder per class) or DIR/train|val|test/<class>/<image>"


def is_image_file(name: str | os.PathLike) -> bool:
    """True if the file name ends in one of :data:`IMAGE_EXTENSIONS`, in any case."""
    return os.path.splitext(os.fspath(name))[1].lower() in IMAGE_EXTENSIONS


def _listable(rel: str) -> bool:
    """True if ``rel`` survives a list-file line: no line break, no space at either end (the parser
    strips the path and splits lines on every Unicode line boundary)."""
    return len(f"{rel} 0".splitlines()) == 1 and rel.strip() == rel


# --------------------------------------------------------------------------- scanning


@dataclass
class FolderScan:
    """What :func:`scan_folder` found under ``root``.

    ``splits`` maps a split name to its images as ``(path relative to root, label)`` pairs, sorted by
    label then path: ``{"all": ...}`` for a folder with one sub-folder per class, or ``"train"``,
    ``"test"`` and, when present, ``"val"`` for a folder that is already split. ``skipped`` holds
    ``(relative path, why)`` for files that are not images.
    """

    root: Path
    classes: list[str]
    splits: dict[str, list[tuple[str, int]]]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def pre_split(self) -> bool:
        return "all" not in self.splits

    @property
    def num_images(self) -> int:
        return sum(len(items) for items in self.splits.values())

    def class_counts(self, split: str | None = None) -> list[int]:
        """Images per class in ``split`` (default: "train" if pre-split, else "all")."""
        split = split or ("train" if self.pre_split else "all")
        counts = [0] * len(self.classes)
        for _, label in self.splits.get(split, []):
            counts[label] += 1
        return counts


def _visible(folder: Path) -> tuple[list[str], list[str]]:
    """Sorted names of the non-hidden sub-folders and files of ``folder``."""
    dirs, files = [], []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            (dirs if entry.is_dir() else files).append(entry.name)
    return sorted(dirs), sorted(files)


def _walk_files(top: Path) -> list[Path]:
    """Every non-hidden file below ``top``, following linked folders once each."""
    out, seen = [], set()
    for here, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out.extend(Path(here) / f for f in files if not f.startswith("."))
    return out


def _scan_classes(base: Path, root: Path, skipped: list, problems: list) -> dict[str, list[str]]:
    """{class folder name: sorted image paths relative to ``root``} for the class folders of ``base``."""
    dirs, files = _visible(base)
    skipped.extend(((base / f).relative_to(root).as_posix(), "outside any class folder") for f in files)
    found = {}
    for name in dirs:
        images, unlistable = [], []
        for path in _walk_files(base / name):
            rel = path.relative_to(root).as_posix()
            if not is_image_file(path.name):
                skipped.append((rel, "not an image (by extension)"))
            elif not _listable(rel):
                unlistable.append(rel)
            else:
                images.append(rel)
        if unlistable:
            problems.append(f"{len(unlistable)} image path(s) in {base / name} start with a space or hold a line "
                            f"break, which a list file cannot hold (first: {unlistable[0]!r}): rename them")
        if not images and not unlistable:
            problems.append(f"class folder {base / name} holds no images ({' '.join(IMAGE_EXTENSIONS)}): "
                            "add images or remove the folder")
        found[name] = sorted(images)
    return found


def _class_problems(base: Path, names: list[str], top_files: list[str]) -> list[str]:
    if not names:
        if any(is_image_file(f) for f in top_files):
            return [f"{base} holds images but no class sub-folders: put them in one sub-folder per class "
                    f"({base}/<class>/<image>)"]
        return [f"{base} holds no class sub-folders: expected {_LAYOUT}"]
    if len(names) == 1:
        return [f"{base} has only one class ({names[0]!r}): a classifier needs at least two class sub-folders"]
    return []


def _scan(root: str | os.PathLike) -> tuple[FolderScan, list[str]]:
    """The scan and every structural problem found (scan_folder raises the first; check_folder lists all)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist: give the folder that holds {_LAYOUT}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file, not a folder: give the folder that holds {_LAYOUT}")
    dirs, files = _visible(root)
    problems: list[str] = []
    skipped: list[tuple[str, str]] = []
    if "train" not in dirs:
        split_like = [d for d in dirs if d in SPLIT_NAMES]
        if split_like:
            problems.append(f"{root} has {'/ and '.join(split_like)}/ but no train/: an already split folder "
                            "needs train/ and test/ (val/ optional); if these are classes, rename them")
        per_class = _scan_classes(root, root, skipped, problems)
        classes = sorted(per_class)
        problems[:0] = _class_problems(root, classes, files)
        splits = {"all": [(p, label) for label, c in enumerate(classes) for p in per_class[c]]}
        return FolderScan(root, classes, splits, skipped), problems

    others = [d for d in dirs if d not in SPLIT_NAMES]
    if others:
        problems.append(f"{root} holds train/ beside other folders ({', '.join(others[:5])}): an already split "
                        "folder holds only train/, val/ (optional) and test/, each with one sub-folder per class")
    if "test" not in dirs:
        problems.append(f"{root} has train/ but no test/: an already split folder needs train/ and test/ "
                        "(val/ optional: without it validation is drawn from train/)")
    skipped.extend((f, "outside any split folder") for f in files)
    per_split = {s: _scan_classes(root / s, root, skipped, problems) for s in SPLIT_NAMES if s in dirs}
    classes = sorted(per_split["train"])
    problems[:0] = _class_problems(root / "train", classes, _visible(root / "train")[1])
    problems += [f"{root / s} holds no class sub-folders: fill it with train/'s class folders or remove it"
                 + (" (without val/, validation is drawn from train/)" if s == "val" else "")
                 for s in ("val", "test") if s in per_split and not per_split[s]]
    label = {c: i for i, c in enumerate(classes)}
    splits = {}
    for s, per_class in per_split.items():
        for c in sorted(set(per_class) - set(label)):
            problems.append(f"{root / s / c} is a class that {root / 'train'} does not have: every class in "
                            f"{s}/ needs training images in train/{c}/ (or remove {s}/{c}/)")
        splits[s] = [(p, label[c]) for c in classes if c in per_class for p in per_class[c]]
    return FolderScan(root, classes, splits, skipped), problems


def _decode_errors(root: Path, rels: list[str], workers: int | None) -> list[str | None]:
    """The decoder's error text for each image (None: it decodes fully), on ``workers`` threads."""
    full = [str(root / p) for p in rels]
    workers = workers or min(8, usable_cpus())
    if workers > 1 and len(full) > 1:
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(_check_image, full, chunksize=64))
    return [_check_image(f) for f in full]


def scan_folder(root: str | os.PathLike, decode: bool = True, workers: int | None = None) -> FolderScan:
    """Find the classes and images under ``root`` (see the module docstring for the layouts).

    With ``decode`` (the default) every image is decoded once (Pillow open + verify + load, on
    ``workers`` threads, default min(8, CPUs)); one that fails is left out of ``splits`` and added
    to ``skipped`` as ``(path, "unreadable (<error>)")``, the error as ``check_folder`` gives it.

    Raises FileNotFoundError for a missing ``root``; ValueError for a folder with no class
    sub-folders (or images directly inside it), only one class, a class folder without images (or,
    with ``decode``, without a readable one in train/), a class in val/ or test/ that train/ lacks,
    or train/ without test/. The message names the folder and the fix; ``check_folder`` lists every
    such problem at once.
    """
    scan, problems = _scan(root)
    if problems:
        more = f" (and {len(problems) - 1} more: `longtail data check {scan.root}` lists all)" if len(problems) > 1 else ""
        raise ValueError(problems[0] + more)
    if not decode:
        return scan
    for split, items in scan.splits.items():
        errors = _decode_errors(scan.root, [p for p, _ in items], workers)
        scan.skipped.extend((p, f"unreadable ({err})") for (p, _), err in zip(items, errors) if err)
        scan.splits[split] = [item for item, err in zip(items, errors) if not err]
    counts = scan.class_counts()
    empty = [name for name, n in zip(scan.classes, counts) if n == 0]
    if empty:
        where = scan.root / "train" if scan.pre_split else scan.root
        raise ValueError(f"class folder {where / empty[0]} holds no readable image"
                         + (f" (nor do {len(empty) - 1} other classes)" if len(empty) > 1 else "")
                         + f": `longtail data check {scan.root}` lists the unreadable files; replace or remove them")
    return scan


# --------------------------------------------------------------------------- splitting


class SmallClass(NamedTuple):
    """A class too small to give a validation or a test image: its name, its image count, what each split got."""

    name: str
    images: int
    train: int
    val: int
    test: int


class FolderSplit(NamedTuple):
    """(train, val, test) lists of ``(relative path, label)``, and the classes left without val or test images."""

    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    test: list[tuple[str, int]]
    too_small: list[SmallClass]


def split_counts(n: int, val_per_class: int, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) sizes for a class of ``n`` images.

    test = round(test_fraction * n) (halves up), at least 1 when n >= 3 and test_fraction > 0, at most
    n - 1; then val = min(val_per_class, what is left - 1); training keeps the rest, always >= 1.
    """
    test = math.floor(test_fraction * n + 0.5)
    if test_fraction > 0 and n >= 3:
        test = max(test, 1)
    test = max(0, min(test, n - 1))
    val = max(0, min(val_per_class, n - test - 1))
    return n - test - val, val, test


def _class_rng(seed: int, name: str) -> np.random.Generator:
    # keyed by the class NAME: adding a class or images of another class leaves this class's split alone
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def _draw(paths: list[str], sizes: tuple[int, ...], rng: np.random.Generator) -> list[list[str]]:
    """``paths`` (sorted first) shuffled and cut into consecutive parts of the given sizes."""
    ordered = sorted(paths)
    shuffled = [ordered[i] for i in rng.permutation(len(ordered))]
    parts, start = [], 0
    for size in sizes:
        parts.append(sorted(shuffled[start:start + size]))
        start += size
    return parts


def _by_class(items: list[tuple[str, int]], num_classes: int) -> list[list[str]]:
    out: list[list[str]] = [[] for _ in range(num_classes)]
    for path, label in items:
        out[label].append(path)
    return out


def split_folder(scan: FolderScan, val_per_class: int = 20, test_fraction: float = 0.2, seed: int = 0) -> FolderSplit:
    """Split a scanned folder into training, validation and test lists, stratified and seeded.

    A folder with one sub-folder per class: per class of n images, ``split_counts(n, val_per_class,
    test_fraction)`` images go to test, then validation, the rest to training; which images is a
    permutation seeded by ``seed`` and the class name, of the class's paths in sorted order, so the
    split does not depend on the file system's listing order. Validation is as balanced as the classes
    allow: every class gives ``val_per_class`` unless it is too small.
    An already split folder keeps its lists; without val/, validation is drawn from train/ by the same
    rule with no test share (``test_fraction`` is then unused).
    ``too_small`` lists the classes that got no validation image (when ``val_per_class`` > 0) or no
    test image (when a test share was asked for, or test/ lacks the class).
    """
    if not (isinstance(val_per_class, int) and val_per_class >= 0):
        raise ValueError(f"val_per_class must be a whole number >= 0, got {val_per_class!r}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    num_classes = len(scan.classes)
    if not scan.pre_split:
        pools, given_test, want_test = _by_class(scan.splits["all"], num_classes), None, test_fraction > 0
    else:
        pools = _by_class(scan.splits["train"], num_classes)
        given_test, want_test = _by_class(scan.splits["test"], num_classes), True
        if "val" in scan.splits:
            val = _by_class(scan.splits["val"], num_classes)
            return _assemble([(pools[c], val[c], given_test[c]) for c in range(num_classes)], scan.classes,
                             val_per_class > 0, want_test)
    parts = []
    for c, name in enumerate(scan.classes):
        n = len(pools[c])
        _, n_val, n_test = split_counts(n, val_per_class, 0.0 if given_test is not None else test_fraction)
        test, val, train = _draw(pools[c], (n_test, n_val, n - n_test - n_val), _class_rng(seed, name))
        parts.append((train, val, test if given_test is None else given_test[c]))
    return _assemble(parts, scan.classes, val_per_class > 0, want_test)


def _assemble(parts, classes: list[str], want_val: bool, want_test: bool) -> FolderSplit:
    """FolderSplit from per-class (train, val, test) path lists, in label order."""
    train, val, test, small = [], [], [], []
    for label, (tr, va, te) in enumerate(parts):
        train += [(p, label) for p in tr]
        val += [(p, label) for p in va]
        test += [(p, label) for p in te]
        if (want_val and not va) or (want_test and not te):
            small.append(SmallClass(classes[label], len(tr) + len(va) + len(te), len(tr), len(va), len(te)))
    return FolderSplit(train, val, test, small)


# --------------------------------------------------------------------------- writing


def write_split_lists(out_dir: str | os.PathLike, classes: list[str], train, val, test) -> dict[str, Path]:
    """Write ``train.txt``, ``val.txt``, ``test.txt`` (``relative/path label`` lines, UTF-8, readable by
    ``read_list``/``ListDataset`` with the scanned folder as root) and ``classes.txt`` (one class name
    per line, in label order) into ``out_dir``; returns their paths by name ("train", ..., "classes").

    All four are always written (an empty split gives an empty file), each to a temporary file first
    and then renamed, so no stale or half-written list is left behind.
    """
    for name in classes:
        if not name or len(name.splitlines()) != 1:
            raise ValueError(f"class name {name!r} cannot be one line of classes.txt: rename its folder")
    for split_name, items in (("train", train), ("val", val), ("test", test)):
        for path, label in items:
            if not _listable(path):
                raise ValueError(f"{split_name} path {path!r} cannot be written to a list file "
                                 "(a space at either end or a line break): rename the file")
            if not 0 <= label < len(classes):
                raise ValueError(f"{split_name} label {label} of {path!r} is not in [0, {len(classes)})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split_name, items in (("train", train), ("val", val), ("test", test)):
        written[split_name] = out_dir / f"{split_name}.txt"
        write_text_replacing(written[split_name], "".join(f"{p} {label}\n" for p, label in items))
    written["classes"] = out_dir / "classes.txt"
    write_text_replacing(written["classes"], "".join(f"{c}\n" for c in classes))
    return written


def read_classes(path: str | os.PathLike) -> list[str]:
    """Class names from a ``classes.txt`` written by :func:`write_split_lists` (label order)."""
    text = Path(path).read_text(encoding="utf-8")
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


# --------------------------------------------------------------------------- checking


@dataclass
class FolderReport:
    """What :func:`check_folder` found. ``ok`` is True when the folder can be trained on as it is."""

    root: str
    classes: list[str]
    counts: dict[str, list[int]]  # split ("all" or "train"/"val"/"test") -> images per class
    problems: list[str] = field(default_factory=list)  # what scan_folder refuses
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (relative path, error)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)
    decoded: bool = False

    @property
    def num_images(self) -> int:
        return sum(sum(c) for c in self.counts.values())

    @property
    def ok(self) -> bool:
        return self.num_images > 0 and not (self.problems or self.unreadable)

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["ok"] = self.ok
        return d

    def summary(self, max_items: int = 10, max_classes: int = 30) -> str:
        splits = list(self.counts)
        layout = "one sub-folder per class" if splits == ["all"] else "split into " + ", ".join(f"{s}/" for s in splits)
        sizes = "" if splits == ["all"] else " (" + ", ".join(f"{s} {sum(self.counts[s])}" for s in splits) + ")"
        out = [f"{self.root}: {self.num_images} images{sizes}, {len(self.classes)} classes, {layout}"]
        main = self.counts.get("train", self.counts.get("all", []))
        if any(main):
            c = np.asarray(main)
            lo, hi = int(np.argmin(np.where(c > 0, c, c.max() + 1))), int(np.argmax(c))
            out.append(f"  per class{' (train)' if 'train' in self.counts else ''}: min {c[lo]} ({self.classes[lo]}), "
                       f"max {c[hi]} ({self.classes[hi]}), imbalance {c[hi] / c[lo]:.1f}"
                       + ("" if self.decoded else " (images not decoded)"))
            for label, name in enumerate(self.classes[:max_classes]):
                out.append(f"    {label:>4} {name}: " + ", ".join(
                    f"{self.counts[s][label]}" if splits == ["all"] else f"{s} {self.counts[s][label]}" for s in splits))
            if len(self.classes) > max_classes:
                out.append(f"    ... and {len(self.classes) - max_classes} more classes")

        def section(title, items, fmt):
            report_section(out, title, items, fmt, max_items)

        section("problems", self.problems, str)
        section("unreadable images", self.unreadable, lambda x: f"{x[0]}: {x[1]}")
        section("skipped files", self.skipped, lambda x: f"{x[0]} ({x[1]})")
        for s in ("val", "test"):
            if s in self.counts:
                section(f"classes without {s} images", [n for n, k in zip(self.classes, self.counts[s]) if not k], str)
        out.append("  OK" if self.ok else "  PROBLEMS FOUND: fix the folder or the files before training")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.summary()


def check_folder(root: str | os.PathLike, decode: bool = True, workers: int | None = None) -> FolderReport:
    """Audit an image folder; never raises for problems in the data (only for a ``root`` that is missing).

    Lists every problem ``scan_folder`` would refuse, the images per class and split, skipped files,
    and (``decode=True``) the images that do not decode fully (Pillow open + verify + load, on
    ``workers`` threads, default min(8, CPUs)) with the reason. ``print(report)`` gives a summary.
    """
    scan, problems = _scan(root)
    report = FolderReport(root=str(scan.root), classes=scan.classes,
                          counts={s: scan.class_counts(s) for s in scan.splits}, problems=problems,
                          skipped=scan.skipped, decoded=decode)
    if decode:
        rels = [p for items in scan.splits.values() for p, _ in items]
        report.unreadable = [(p, err) for p, err in zip(rels, _decode_errors(scan.root, rels, workers)) if err]
    return report
