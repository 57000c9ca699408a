"""Datasets defined by list files: lines of ``relative/path label``.

The format of ImageNet-LT, Places-LT and iNaturalist 2018 (and of your own data): one image per
line, the path relative to an image root, whitespace, an integer label in [0, num_classes). The
label is taken after the LAST run of whitespace, so paths may contain spaces. Blank lines are
skipped; a UTF-8 byte-order mark and CRLF line ends are accepted.

:class:`ListDataset` decodes with Pillow inside DataLoader workers and returns uint8 tensors. For
the "imagenet" recipe it takes the random resized crop from the whole image as it decodes (keyed,
so that a resumed run crops alike); flip and colour jitter happen later, batched on the device.
:func:`check_list` audits a list against the images on disk before a long run.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .augment import random_resized_crop_boxes
from .imbalance import limit_per_class as _limit_indices

__all__ = ["read_list", "first_line_with_label", "class_counts_from_list", "ListDataset", "ListReport", "check_list", "decode_image",
           "decode_random_resized", "crop_generator"]


# --------------------------------------------------------------------------- parsing


@dataclass
class _Parsed:
    paths: list[str]
    labels: np.ndarray  # int64
    lines: np.ndarray  # 1-based line number of each entry
    problems: list[tuple[int, str, str]]  # (line number, line text, what is wrong)


def _read_text(list_file: Path) -> str:
    if list_file.is_dir():  # read_bytes would raise IsADirectoryError (PermissionError on Windows)
        raise ValueError(f"list file {list_file} is a folder; give the text file that lists the images "
                         "(`relative/path label` lines), and their folder as the image root")
    try:
        raw = list_file.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"list file not found: {list_file}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{list_file}:{line}: not valid UTF-8 ({e.reason}); save the list as UTF-8") from None


_MAX_INFERRED_CLASSES = 10_000_000  # iNaturalist 2018 has 8,142


def _check_num_classes(num_classes: int | None) -> None:
    # 0 classes admit no label: every line would be "out of range" and the counts empty
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1 (or None: max label + 1), got {num_classes}")


def _parse(list_file: Path, num_classes: int | None, strict: bool) -> _Parsed:
    _check_num_classes(num_classes)
    text = _read_text(list_file)
    paths: list[str] = []
    label_text: list[str] = []
    line_no: list[int] = []
    problems: list[tuple[int, str, str]] = []
    expect = "expected 'relative/path label' (an integer label after the last space)"
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            if not parts:  # blank line
                continue
            problems.append((n, line, f"{expect}, got only one field"))
            if strict:
                break
            continue
        p, lab = parts
        p = p.strip()
        digits = lab[1:] if lab[0] in "+-" else lab  # one sign at most: int() refuses "--5"
        if not (lab.isascii() and digits.isdigit() and len(lab) < 19):
            problems.append((n, line, f"{expect}; label {lab!r} is not an integer"))
            if strict:
                break
            continue
        paths.append(p)
        label_text.append(lab)
        line_no.append(n)
    labels = np.array([int(s) for s in label_text], dtype=np.int64)
    lines = np.array(line_no, dtype=np.int64)
    # range check on every parsed entry (in strict mode only the first problem is reported)
    if num_classes is None:
        # the classes are inferred as max label + 1 and counted per class: an id-sized label (an
        # image id in the label column) would allocate a count for every class up to it
        bad = (labels < 0) | (labels >= _MAX_INFERRED_CLASSES)
    else:
        bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        for i in np.flatnonzero(bad)[: (1 if strict else None)]:
            if num_classes is not None:
                why = f"label {labels[i]} must be in [0, {num_classes})"
            elif labels[i] < 0:
                why = f"label {labels[i]} must be >= 0"
            else:
                why = (f"label {labels[i]} is not a plausible class index (classes are counted as max label + 1; "
                       f"over {_MAX_INFERRED_CLASSES:,} is refused unless num_classes is given)")
            problems.append((int(lines[i]), f"{paths[i]} {labels[i]}", why))
        keep = ~bad
        paths = [p for p, k in zip(paths, keep) if k]
        labels, lines = labels[keep], lines[keep]
    problems.sort()
    if strict and problems:
        n, line, why = problems[0]
        raise ValueError(f"{list_file}:{n}: {why}: {line!r}. Fix or remove that line (see `check_list`)")
    return _Parsed(paths, labels, lines, problems)


def read_list(list_file: str | os.PathLike, num_classes: int | None = None) -> tuple[list[str], np.ndarray]:
    """Parse a list file into (paths, labels int64 array).

    Raises ValueError naming ``file:line`` for the first line that does not parse or whose label is
    negative or (when ``num_classes`` is given) not below ``num_classes``.
    """
    parsed = _parse(Path(list_file), num_classes, strict=True)
    return parsed.paths, parsed.labels


def first_line_with_label(list_file: str | os.PathLike, label: int) -> int | None:
    """The 1-based line of the list's first entry with `label` (None if none)."""
    parsed = _parse(Path(list_file), None, strict=False)
    hits = np.flatnonzero(parsed.labels == label)
    return int(parsed.lines[hits[0]]) if hits.size else None


def class_counts_from_list(list_file_or_labels, num_classes: int | None = None) -> list[int]:
    """Images per class, from a list file or a labels array; length ``num_classes`` (default max+1)."""
    _check_num_classes(num_classes)
    if isinstance(list_file_or_labels, (str, os.PathLike)):
        _, labels = read_list(list_file_or_labels, num_classes)
    else:
        labels = np.asarray(list_file_or_labels, dtype=np.int64)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    return np.bincount(labels, minlength=num_classes).tolist()


# --------------------------------------------------------------------------- decoding


def _resize_short(img: Image.Image, size: int) -> Image.Image:
    """Short side to ``size``, aspect kept (torchvision ``Resize(size)`` sizing, bilinear, antialiased)."""
    w, h = img.size
    if (w <= h and w == size) or (h <= w and h == size):
        return img
    if w < h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    return img.resize((nw, nh), Image.BILINEAR)


def _center_crop(img: Image.Image, size: int) -> Image.Image:
    """Centre ``size`` x ``size`` crop (torchvision ``CenterCrop`` placement)."""
    w, h = img.size
    if w < size or h < size:  # only after rounding; pad by resizing up
        img = img.resize((max(w, size), max(h, size)), Image.BILINEAR)
        w, h = img.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def decode_image(path: str | os.PathLike, resize: int, crop: int) -> torch.Tensor:
    """Decode an image file to a uint8 (3, crop, crop) tensor: RGB, short side ``resize``, centre crop."""
    with Image.open(path) as im:
        img = im.convert("RGB")
    return _to_tensor(_center_crop(_resize_short(img, resize), crop))


def crop_generator(key) -> torch.Generator:
    """A CPU generator for one image's crop, seeded from a key such as (seed, epoch, rank, step,
    position): the same key gives the same crop in any worker, before or after a resume."""
    # each field as two fixed 32-bit words after the field count, so that no two keys share entropy
    # (SeedSequence would split a large int into words and run it together with its neighbours)
    words = [len(key)] + [w for k in key for w in (int(k) % 2**64 & 0xFFFFFFFF, int(k) % 2**64 >> 32)]
    state = np.random.SeedSequence(words).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _reflect_pad(img: Image.Image, pad: int) -> Image.Image:
    """Mirror ``pad`` pixels onto every side, the edge row not repeated (torch's reflect padding)."""
    a = np.asarray(img, dtype=np.uint8)
    if min(a.shape[:2]) <= pad:
        raise ValueError(f"cannot reflect-pad a {a.shape[1]}x{a.shape[0]} image by {pad} pixels: it must be larger than that")
    return Image.fromarray(np.pad(a, ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))


def decode_random_resized(path: str | os.PathLike, size: int, generator: torch.Generator, pad: int = 0) -> torch.Tensor:
    """torchvision's RandomResizedCrop(size) on the whole decoded image: a box with scale (0.08, 1)
    of its area and aspect ratio (3/4, 4/3), cropped and resized to size x size (bilinear,
    antialiased, as PIL resizes). ``pad`` > 0 reflect-pads the image first (the released GALA
    recipe pads 4). Returns uint8 (3, size, size)."""
    with Image.open(path) as im:
        img = im.convert("RGB")
    if pad:
        img = _reflect_pad(img, pad)
    top, left, h, w = (int(v) for v in random_resized_crop_boxes(1, img.height, img.width, generator=generator)[0])
    return _to_tensor(img.crop((left, top, left + w, top + h)).resize((size, size), Image.BILINEAR))


class ListDataset(torch.utils.data.Dataset):
    """Images listed in a list file, decoded with Pillow; items are ``(uint8 (3, S, S) tensor, label)``
    with S = ``image_size``.

    crop="centre" (evaluation, and training recipes that augment on the device): short side to
    ``resize``, centre crop ``image_size``, the standard evaluation transform.
    crop="random_resized" (training with the "imagenet" recipes): RandomResizedCrop(image_size) from
    the whole image, as torchvision takes it; with ``pad`` > 0 from the image reflect-padded by that
    many pixels (the "imagenet_randaugment" recipe pads 4). Index with ``(i, key)``: the crop comes
    from ``crop_generator(key)``, so it is the same in any worker and after a resume (the loader keys
    it by seed, epoch, rank, step and position); a bare ``i`` keys it by ``(i,)``. Flip and colour
    jitter follow, batched on the device.

    ``list_file`` may also be the (relative path, label) pairs themselves (an image folder's split).
    ``limit_per_class`` keeps only the first k listed images of each class (tiny runs).
    Paths are stored in one numpy byte buffer rather than a list of Python strings, so DataLoader
    workers do not copy them page by page through reference counting.
    """

    def __init__(self, root: str | os.PathLike, list_file: str | os.PathLike | list[tuple[str, int]],
                 num_classes: int | None = None, image_size: int = 224, resize: int = 256, *,
                 limit_per_class: int | None = None, crop: str = "centre", pad: int = 0):
        if crop not in ("centre", "random_resized"):
            raise ValueError(f"crop must be 'centre' or 'random_resized', got {crop!r}")
        if crop == "centre" and resize < image_size:
            raise ValueError(f"resize ({resize}) must be >= image_size ({image_size})")
        self.root = Path(root)
        self.crops_on_load = crop == "random_resized"
        if pad < 0 or (pad and not self.crops_on_load):
            raise ValueError(f"pad={pad}: a reflect padding (>= 0) goes with the random resized crop on loading "
                             "(crop='random_resized')")
        self.pad = int(pad)
        self.image_size = image_size
        self.resize = resize
        if isinstance(list_file, list):  # (path, label) pairs already read, e.g. an image folder's split
            self.list_file = Path(root)
            paths, labels = [p for p, _ in list_file], np.array([c for _, c in list_file], dtype=np.int64)
        else:
            self.list_file = Path(list_file)
            paths, labels = read_list(self.list_file, num_classes)
        if not paths:
            raise ValueError(f"{self.list_file} lists no images")
        self.num_classes = int(num_classes) if num_classes is not None else int(labels.max()) + 1
        keep = _limit_indices(labels, np.arange(len(paths)), limit_per_class)
        if keep.size != len(paths):
            paths = [paths[i] for i in keep]
            labels = labels[keep]
        encoded = [p.encode("utf-8") for p in paths]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        self.labels = torch.from_numpy(labels)

    @property
    def class_counts(self) -> list[int]:
        return np.bincount(self.labels.numpy(), minlength=self.num_classes).tolist()

    def path(self, i: int) -> str:
        return self._blob[self._offsets[i]:self._offsets[i + 1]].tobytes().decode("utf-8")

    @property
    def paths(self) -> list[str]:
        return [self.path(i) for i in range(len(self))]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, item) -> tuple[torch.Tensor, int]:
        i, key = item if isinstance(item, tuple) else (item, (item,))
        rel = self.path(i)
        full = self.root / rel
        try:
            if self.crops_on_load:
                img = decode_random_resized(full, self.image_size, crop_generator(key), self.pad)
            else:
                img = decode_image(full, self.resize, self.image_size)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"image not found: {full} (listed in {self.list_file}); check data.root, or list every problem with "
                f"`longtail data check {self.list_file} --root {self.root}`"
            ) from None
        except Exception as e:
            raise OSError(f"cannot decode {full} (listed in {self.list_file}): {e}; `longtail data check` lists every "
                          "unreadable file") from e
        return img, int(self.labels[i])

    def __repr__(self) -> str:
        return (f"ListDataset({len(self)} images, {self.num_classes} classes, root={str(self.root)!r}, "
                f"list={str(self.list_file)!r}, out={self.image_size}"
                + (f", reflect pad {self.pad}" if self.pad else "")
                + (", random resized crop on load)" if self.crops_on_load else ")"))


# --------------------------------------------------------------------------- checking


def report_section(out: list[str], title: str, items: list, fmt, max_items: int) -> None:
    """Append `title: N` and the first `max_items` of `items` (formatted) to a report's lines."""
    if items:
        out.append(f"  {title}: {len(items)}")
        out.extend("    " + fmt(x) for x in items[:max_items])
        if len(items) > max_items:
            out.append(f"    ... and {len(items) - max_items} more")


@dataclass
class ListReport:
    """What :func:`check_list` found. ``ok`` is True when nothing is wrong."""

    list_file: str
    root: str
    num_entries: int
    num_classes: int
    class_counts: list[int]
    empty_classes: list[int] = field(default_factory=list)
    missing: list[tuple[int, str]] = field(default_factory=list)  # (line, path)
    unreadable: list[tuple[int, str, str]] = field(default_factory=list)  # (line, path, error)
    label_problems: list[tuple[int, str, str]] = field(default_factory=list)  # (line, text, problem)
    duplicates: list[tuple[str, list[int]]] = field(default_factory=list)  # (path, lines)
    decoded: bool = False

    @property
    def ok(self) -> bool:
        # a list without a single entry is not fit to train on (ListDataset refuses it)
        return self.num_entries > 0 and not (self.missing or self.unreadable or self.label_problems
                                             or self.duplicates or self.empty_classes)

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["ok"] = self.ok
        return d

    def summary(self, max_items: int = 10) -> str:
        c = np.asarray(self.class_counts) if self.class_counts else np.zeros(1, dtype=np.int64)
        nonzero = c[c > 0] if (c > 0).any() else np.zeros(1, dtype=np.int64)
        out = [
            f"{self.list_file}: {self.num_entries} images, {self.num_classes} classes, root {self.root}",
            f"  per class: min {int(nonzero.min())}, max {int(c.max())}, imbalance {c.max() / nonzero.min():.1f}"
            + ("" if self.decoded else " (images checked for existence only, not decoded)")
            if self.num_entries else "  no images: the list holds no `relative/path label` line",
        ]

        def section(title, items, fmt):
            report_section(out, title, items, fmt, max_items)

        section("label problems", self.label_problems, lambda x: f"line {x[0]}: {x[2]}: {x[1]!r}")
        section("missing files", self.missing, lambda x: f"line {x[0]}: {x[1]}")
        section("unreadable images", self.unreadable, lambda x: f"line {x[0]}: {x[1]}: {x[2]}")
        section("duplicate paths", self.duplicates, lambda x: f"{x[0]} on lines {', '.join(map(str, x[1]))}")
        section("classes with no images", self.empty_classes, str)
        out.append("  OK" if self.ok else "  PROBLEMS FOUND: fix the list or the files before training")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.summary()


def _check_image(path: str) -> str | None:
    """None if the image decodes fully, else the error text (missing files are checked before)."""
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))  # JPEG: DCT-domain downscale, still reads the whole stream
            im.load()
    except Exception as e:  # noqa: BLE001 - any decoder failure is a finding, not a crash
        return f"{type(e).__name__}: {e}"
    return None


def check_list(root: str | os.PathLike, list_file: str | os.PathLike, num_classes: int | None = None,
               decode: bool = True, workers: int | None = None) -> ListReport:
    """Audit a list file against the images under ``root``; never raises for problems in the data.

    Finds lines that do not parse, labels out of range, duplicate paths, missing files, images that
    do not decode (``decode=True``: Pillow open + verify + full load, on ``workers`` threads, default
    min(8, CPUs)), per-class counts and empty classes. ``print(report)`` gives a readable summary.

    Raises for what leaves nothing to check: a list that cannot be read, a ``root`` that is not a
    folder (FileNotFoundError; every image would be "missing"), ``num_classes`` < 1 (ValueError).
    """
    root, list_file = Path(root), Path(list_file)
    parsed = _parse(list_file, num_classes, strict=False)
    if not root.is_dir():
        raise FileNotFoundError(f"image root {root} {'is not a folder' if root.exists() else 'does not exist'}: "
                                f"give the folder the paths in {list_file} are relative to")
    labels = parsed.labels
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    counts = np.bincount(labels, minlength=num_classes).tolist() if num_classes else []
    report = ListReport(
        list_file=str(list_file), root=str(root), num_entries=len(parsed.paths), num_classes=num_classes,
        class_counts=counts, empty_classes=[c for c, n in enumerate(counts) if n == 0],
        label_problems=parsed.problems, decoded=decode,
    )
    seen: dict[str, list[int]] = {}
    for p, n in zip(parsed.paths, parsed.lines.tolist()):
        seen.setdefault(p, []).append(n)
    report.duplicates = [(p, ns) for p, ns in seen.items() if len(ns) > 1]
    full = [os.path.join(root, p) for p in parsed.paths]
    exists = [os.path.isfile(f) for f in full]
    report.missing = [(int(n), p) for n, p, e in zip(parsed.lines, parsed.paths, exists) if not e]
    if decode:
        todo = [i for i, e in enumerate(exists) if e]
        workers = workers or min(8, os.cpu_count() or 1)
        if workers > 1 and len(todo) > 1:
            with ThreadPoolExecutor(workers) as pool:
                errors = list(pool.map(_check_image, [full[i] for i in todo], chunksize=64))
        else:
            errors = [_check_image(full[i]) for i in todo]
        report.unreadable = [(int(parsed.lines[i]), parsed.paths[i], err) for i, err in zip(todo, errors) if err]
    return report

