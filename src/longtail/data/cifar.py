"""CIFAR-10 / CIFAR-100 in the official python-pickle format.

Layout accepted under ``root`` (any one of these):

- ``root/cifar-100-python/{train,test,meta}`` or ``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``
- ``root`` itself being that folder;
- ``root/cifar-100-python.tar.gz`` / ``root/cifar-10-python.tar.gz`` (the official archive): on first
  use its MD5 is checked and its dataset folder, nothing else, is unpacked into ``root``;
- nothing at all with ``download=True``: the official archive is fetched into ``root``, its MD5 checked,
  then extracted.

Images come back as one uint8 tensor (N, 3, 32, 32) and labels as int64 (N,), in file order (the
order every index in this package refers to).

The pickles are read with a restricted unpickler that only builds plain containers and numpy arrays,
so a tampered file cannot run code. Known per-file MD5s are checked by default (about 0.25 s for the
150 MB CIFAR-100 train file, once per process and file); pass ``verify=False`` to skip.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "CIFAR_INFO",
    "CifarSplit",
    "load_cifar",
    "find_cifar_dir",
    "download_cifar",
    "extract_folder",
    "md5_bytes",
    "md5_file",
]


@dataclass(frozen=True)
class _Info:
    folder: str  # folder inside the archive
    archive: str  # archive file name
    url: str
    archive_md5: str
    train_files: tuple[tuple[str, str | None], ...]  # (name, md5)
    test_files: tuple[tuple[str, str | None], ...]
    meta_file: tuple[str, str | None]
    label_key: str
    names_key: str
    num_classes: int


CIFAR_INFO: dict[str, _Info] = {
    "cifar10": _Info(
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        # The per-batch MD5s torchvision checks.
        train_files=(
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ),
        test_files=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
        meta_file=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        label_key="labels",
        names_key="label_names",
        num_classes=10,
    ),
    "cifar100": _Info(
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
        test_files=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        meta_file=("meta", "7973b15100ade9c7d40fb424638fde48"),
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
    ),
}


@dataclass
class CifarSplit:
    """One split of CIFAR, in file order."""

    images: torch.Tensor  # uint8 (N, 3, 32, 32)
    labels: torch.Tensor  # int64 (N,)
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _info(dataset: str) -> _Info:
    key = dataset.lower().replace("-", "").replace("_", "")
    if key not in CIFAR_INFO:
        raise ValueError(f"unknown CIFAR dataset {dataset!r}; expected 'cifar10' or 'cifar100'")
    return CIFAR_INFO[key]


# --------------------------------------------------------------------------- checksums


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# (resolved path, size, mtime_ns) of files whose MD5 already matched in this process.
_VERIFIED: set[tuple[str, int, int]] = set()


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


# --------------------------------------------------------------------------- layout


def _layout_help(info: _Info, root: Path) -> str:
    files = [n for n, _ in info.train_files + info.test_files] + [info.meta_file[0]]
    return (
        f"expected the official python-pickle files {', '.join(files)} in {root / info.folder} "
        f"(or the official archive {info.archive} in {root}); "
        f"get them from {info.url} and unpack into {root}, or pass download=True "
        f"(config: data.download=true) to fetch and verify them automatically"
    )


def find_cifar_dir(root: str | os.PathLike, dataset: str = "cifar100", *, download: bool = False,
                   url: str | None = None, archive_md5: str | None = None, verify: bool = True,
                   split: str | None = None) -> Path:
    """Return the folder holding the pickle files, extracting or downloading the archive if needed.
    An archive found in ``root`` is checked against ``archive_md5`` (default: the official one) when
    ``verify`` is on, as a downloaded one always is. With ``split``, a folder holding that split's
    files and the metadata will do (a validation-only run needs no test file)."""
    info = _info(dataset)
    root = Path(root).expanduser()
    splits = {"train": info.train_files, "test": info.test_files}
    required = [n for s in ([split] if split else splits) for n, _ in splits[s]] + [info.meta_file[0]]

    def complete(d: Path) -> bool:
        return d.is_dir() and all((d / n).is_file() for n in required)

    for candidate in (root / info.folder, root):
        if complete(candidate):
            return candidate
    partial = root / info.folder
    if partial.is_dir():  # not ours to replace: the user may be filling it by hand
        missing = [n for n in required if not (partial / n).is_file()]
        raise FileNotFoundError(f"{partial} is missing {', '.join(missing)}; {_layout_help(info, root)}. "
                                f"To unpack {info.archive} there instead, move that folder away first")
    archive = root / info.archive
    if not archive.is_file() and download:
        archive = download_cifar(root, dataset, url=url, md5=archive_md5)
    elif archive.is_file() and verify:
        _check_archive_md5(archive, archive_md5 or info.archive_md5)
    if archive.is_file():
        extract_folder(archive, root, info.folder)
        if complete(root / info.folder):
            return root / info.folder
        raise FileNotFoundError(
            f"the archive {archive} did not contain the expected files; {_layout_help(info, root)}. "
            "Delete the archive and download it again."
        )
    raise FileNotFoundError(f"CIFAR data not found under {root}: {_layout_help(info, root)}")


def _check_archive_md5(archive: Path, md5: str) -> None:
    got = md5_file(archive)
    if got != md5.lower():
        raise ValueError(f"checksum mismatch for {archive}: md5 {got}, expected {md5.lower()}. The archive is corrupt "
                         "or not the official file; nothing was extracted. Replace it with the official one (or set "
                         "data.verify=false for a copy you trust)")


# --------------------------------------------------------------------------- download / extract


def download_cifar(root: str | os.PathLike, dataset: str = "cifar100", *, url: str | None = None,
                   md5: str | None = None, timeout: float = 60.0) -> Path:
    """Download the archive into ``root`` and verify its MD5; return its path.

    The bytes go to a temporary file in ``root`` that is renamed into place only after the checksum
    matched, so an interrupted or corrupt download never leaves a file that looks complete.
    ``url``/``md5`` default to the official ones (override them to use a mirror).
    """
    info = _info(dataset)
    url = url or info.url
    md5 = (md5 or info.archive_md5).lower()
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    target = root / info.archive
    fd, tmp_name = tempfile.mkstemp(prefix=f".{info.archive}.", suffix=".part", dir=root)
    tmp = Path(tmp_name)
    try:
        h = hashlib.md5(usedforsecurity=False)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                while block := resp.read(1 << 20):
                    h.update(block)
                    out.write(block)
        except (urllib.error.URLError, OSError) as e:
            raise ConnectionError(
                f"could not download {url}: {e}. Without network access, download {info.archive} elsewhere "
                f"and put it in {root} (or unpack it there so that {root / info.folder} exists)"
            ) from e
        got = h.hexdigest()
        if got != md5:
            raise ValueError(
                f"checksum mismatch for {url}: md5 {got}, expected {md5}. The download is corrupt or not "
                f"the official file; nothing was kept. Try again, or put the official {info.archive} in {root} by hand"
            )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _safe_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    dest = dest.resolve()
    members = []
    for m in tar.getmembers():
        if not (m.isfile() or m.isdir()):
            raise ValueError(f"refusing to extract {m.name!r} from {tar.name}: only plain files and folders are allowed")
        target = (dest / m.name).resolve()
        if os.path.isabs(m.name) or (target != dest and dest not in target.parents):
            raise ValueError(f"refusing to extract {m.name!r} from {tar.name}: path leaves {dest}")
        members.append(m)
    return members


def extract_folder(archive: str | os.PathLike, root: str | os.PathLike, folder: str) -> Path:
    """Extract the top-level ``folder`` of a .tar.gz into ``root`` safely, and nothing else.

    Plain files and folders only, nothing outside the extraction folder. The archive is unpacked into
    a temporary folder beside the target, and only ``folder`` is moved into place: whatever else
    ``root`` holds, or the archive holds beside ``folder``, is left alone. An existing ``root/folder``
    is never replaced (FileExistsError). Returns ``root / folder``.
    """
    archive, root = Path(archive), Path(root)
    target = root / folder
    if target.exists():
        raise FileExistsError(f"{target} exists already; move it away to unpack {archive.name} there")
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = _safe_members(tar, tmp)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tar.extractall(tmp, members=members)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ValueError(f"cannot extract {archive}: {e}. The archive is corrupt or truncated; delete it and download again") from e
        if not (tmp / folder).is_dir():
            raise ValueError(f"{archive} holds no top-level folder {folder}/; it is not the expected archive")
        os.replace(tmp / folder, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only what this extraction wrote
    return target


# --------------------------------------------------------------------------- reading


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only plain containers and numpy arrays; anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2 (pure, harmless)
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of the CIFAR format")


def _read_pickle(path: Path, md5: str | None, verify: bool) -> dict:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FileNotFoundError(f"cannot read {path}: {e}") from e
    if verify and md5 is not None:
        key = _file_key(path)
        if key not in _VERIFIED:
            got = md5_bytes(data)
            if got != md5:
                raise ValueError(
                    f"checksum mismatch for {path}: md5 {got}, expected {md5} (official). The file is corrupt, "
                    "truncated or not the official one; delete it and download again (download=True), "
                    "or pass verify=False to load it anyway"
                )
            _VERIFIED.add(key)
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # truncated or corrupt pickles raise many different types
        raise ValueError(
            f"cannot unpickle {path}: {type(e).__name__}: {e}. The file is corrupt or truncated; "
            "delete it and download again (download=True)"
        ) from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a CIFAR dict (got {type(obj).__name__}); download it again")
    return obj


def _decode_batch(path: Path, obj: dict, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    if "data" not in obj or label_key not in obj:
        raise ValueError(f"{path} lacks the keys 'data' and {label_key!r} (has {sorted(obj)}); is it the right CIFAR variant?")
    data = np.asarray(obj["data"])
    try:
        labels = np.asarray(obj[label_key])
    except ValueError:  # ragged nested lists
        labels = np.asarray(None)
    if labels.ndim != 1 or not (labels.size == 0 or np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(
            f"{path}: {label_key!r} must be a list of integer class labels, got {type(obj[label_key]).__name__} "
            f"(dtype {labels.dtype}, shape {labels.shape}); the file is corrupt, download it again"
        )
    labels = labels.astype(np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{path}: data has dtype {data.dtype} and shape {data.shape} with {labels.shape[0]} labels, "
            "expected uint8 (N, 3072) and N labels; the file is corrupt, download it again"
        )
    return data, labels


def load_cifar(root: str | os.PathLike, dataset: str = "cifar100", split: str = "train", *,
               download: bool = False, url: str | None = None, archive_md5: str | None = None,
               verify: bool = True) -> CifarSplit:
    """Load one split (``"train"`` or ``"test"``) of CIFAR-10 or CIFAR-100 as tensors, in file order.

    ``root`` is the folder holding ``cifar-100-python/`` (or ``cifar-10-batches-py/``), that folder
    itself, or a folder with the official ``.tar.gz``. ``download=True`` fetches the archive from
    ``url`` (default: the official one) and checks it against ``archive_md5`` (default: official).
    ``verify`` checks each pickle against its known official MD5.
    """
    info = _info(dataset)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = find_cifar_dir(root, dataset, download=download, url=url, archive_md5=archive_md5, verify=verify,
                            split=split)
    files = info.train_files if split == "train" else info.test_files
    datas, labels = [], []
    for name, md5 in files:
        path = folder / name
        batch_images, batch_labels = _decode_batch(path, _read_pickle(path, md5, verify), info.label_key)
        datas.append(batch_images)
        labels.append(batch_labels)
    meta_path = folder / info.meta_file[0]
    meta = _read_pickle(meta_path, info.meta_file[1], verify)
    if info.names_key not in meta:
        raise ValueError(f"{meta_path} lacks {info.names_key!r}; is it the right CIFAR variant?")
    names = meta[info.names_key]
    if not isinstance(names, (list, tuple)) or len(names) != info.num_classes:
        raise ValueError(
            f"{meta_path}: {info.names_key!r} must be a list of the {info.num_classes} class names, got "
            f"{type(names).__name__}" + (f" of {len(names)}" if isinstance(names, (list, tuple)) else "")
            + "; the file is corrupt, download it again"
        )
    names = [str(n) for n in names]
    data = datas[0] if len(datas) == 1 else np.concatenate(datas)
    label = labels[0] if len(labels) == 1 else np.concatenate(labels)
    if label.size and (label.min() < 0 or label.max() >= len(names)):
        raise ValueError(f"labels in {folder} fall outside [0, {len(names)}); the files are corrupt, download them again")
    images = data.reshape(-1, 3, 32, 32)  # CIFAR stores each image as R(1024) G(1024) B(1024), row-major
    if not images.flags.writeable:
        images = images.copy()
    return CifarSplit(
        images=torch.from_numpy(np.ascontiguousarray(images)),
        labels=torch.from_numpy(np.ascontiguousarray(label)),
        class_names=names,
    )
