"""Pack the CIFAR-100-LT images a run needs into one small archive (52 MiB for IF100, where the
official CIFAR-100 pickles are 179 MB) to copy to a GPU machine, and unpack and check it there.

    python benchmarks/device_data.py pack [--data-root ../shared/data] [--imb-factor 100] [--out .gpu] [--preset 6]
    python benchmarks/device_data.py unpack .gpu/cifar100_lt_if100.tar.xz --to /tmp/data

`pack` writes OUT/cifar100_lt_if<IF>.tar.xz: a `cifar-100-python/` folder in the official format
whose training pickle keeps only the images the IF subset trains and validates on (every other
image is zeroed; the labels, names and order are untouched, so the subset and the validation split
are selected exactly as from the official file), the official test pickle and meta file. Zeroed
images compress to nothing, so the archive is about the size of the images kept. Beside it,
OUT/cifar100_lt_if<IF>.sha256.json holds the SHA-256 of the benchmark's training, validation and
test tensors (images and labels) loaded from the official files.

`unpack` extracts the archive and loads the benchmark from it with `verify=False` (the blanked
training pickle no longer has the official MD5), then checks every tensor against the SHA-256s
taken from the official data, so a run on the copy trains and evaluates on exactly the official
images. Train on it with `data.root=<to> data.verify=false`. benchmarks/gpu_benchmark.sh and
benchmarks/gpu_queue.sh unpack the archive from .gpu/ themselves.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

from longtail.config import DataConfig
from longtail.data import load_benchmark
from longtail.data.cifar import find_cifar_dir

FOLDER = "cifar-100-python"


def default_data_root() -> str:
    return str(Path(__file__).resolve().parents[2] / "shared" / "data")


def benchmark_digests(root, imb_factor: float, verify: bool) -> dict[str, str]:
    """SHA-256 of each split's images and labels, as the trainer loads them."""
    b = load_benchmark(DataConfig(name="cifar100-lt", root=str(root), imb_factor=imb_factor, verify=verify))
    out = {}
    for split in ("train", "val", "test"):
        s = getattr(b, split)
        for part in ("images", "labels"):
            t = getattr(s, part).contiguous().numpy()
            out[f"{split}.{part}"] = hashlib.sha256(t.tobytes()).hexdigest() + f" {list(t.shape)}"
    return out


def names(imb_factor: float, xz: bool = True) -> tuple[str, str]:
    stem = f"cifar100_lt_if{imb_factor:g}"
    return f"{stem}.tar" + (".xz" if xz else ""), f"{stem}.sha256.json"


def pack(data_root: str, imb_factor: float, out: Path, preset: int | None = 6) -> Path:
    """preset: the xz level (0 fast, 9 small); None writes a plain tar (fast; tests)."""
    t0 = time.perf_counter()
    b = load_benchmark(DataConfig(name="cifar100-lt", root=str(data_root), imb_factor=imb_factor))
    keep = np.union1d(b.train.source_indices.numpy(), b.val.source_indices.numpy())
    folder = find_cifar_dir(data_root, "cifar100")
    with open(folder / "train", "rb") as f:
        train = pickle.load(f, encoding="latin1")  # the official file, already MD5-checked above
    blank = np.ones(len(train["data"]), dtype=bool)
    blank[keep] = False
    train["data"] = np.array(train["data"], copy=True)
    train["data"][blank] = 0
    out.mkdir(parents=True, exist_ok=True)
    archive, digest_file = names(imb_factor, xz=preset is not None)
    with (tarfile.open(out / archive, "w") if preset is None else tarfile.open(out / archive, "w:xz", preset=preset)) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("train", pickle.dumps(train, protocol=2))
        add("test", (folder / "test").read_bytes())
        add("meta", (folder / "meta").read_bytes())
    digests = benchmark_digests(data_root, imb_factor, verify=True)
    (out / digest_file).write_text(json.dumps({"imb_factor": imb_factor, "kept_train_images": int(keep.size),
                                               "digests": digests}, indent=1) + "\n")
    size = (out / archive).stat().st_size
    print(f"{out / archive}: {size / 2**20:.1f} MiB ({keep.size} of {len(blank)} training images kept, "
          f"test and meta whole) in {time.perf_counter() - t0:.0f} s; digests in {out / digest_file}")
    return out / archive


def unpack(archive: Path, to: Path) -> None:
    t0 = time.perf_counter()
    expected = json.loads(archive.with_name(archive.name.split(".tar")[0] + ".sha256.json").read_text())
    to.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        tar.extractall(to, filter="data")
    got = benchmark_digests(to, expected["imb_factor"], verify=False)
    bad = [k for k, v in expected["digests"].items() if got.get(k) != v]
    if bad:
        raise SystemExit(f"{archive} does not give the official benchmark: {', '.join(bad)} differ")
    print(f"{to / FOLDER}: unpacked and checked ({len(got)} tensors equal the official ones) "
          f"in {time.perf_counter() - t0:.1f} s; train with data.root={to} data.verify=false")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data-root", default=default_data_root())
    p.add_argument("--imb-factor", type=float, default=100.0)
    p.add_argument("--out", default=".gpu")
    p.add_argument("--preset", type=int, default=6, choices=range(10), help="xz level (0 fast, 9 small)")
    u = sub.add_parser("unpack")
    u.add_argument("archive")
    u.add_argument("--to", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        pack(args.data_root, args.imb_factor, Path(args.out), args.preset)
    else:
        unpack(Path(args.archive), Path(args.to))


if __name__ == "__main__":
    sys.exit(main())
