"""How small can the CIFAR-100-LT images a run needs be made, losslessly, to copy them to a GPU
machine? (The official CIFAR-100 pickles are 179 MB; benchmarks/device_data.py packs them.)

    python benchmarks/export_size.py [--data-root ../shared/data] [--imb-factor 100]
"""
from __future__ import annotations

import argparse
import io
import lzma
import time
from pathlib import Path

import numpy as np

from longtail.config import DataConfig
from longtail.data import load_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--imb-factor", type=float, default=100.0)
    args = ap.parse_args()
    b = load_benchmark(DataConfig(name="cifar100-lt", root=args.data_root, imb_factor=args.imb_factor))
    imgs = np.concatenate([s.images.numpy() for s in (b.train, b.val, b.test) if s is not None])
    print(f"IF{args.imb_factor:g}: {len(imgs)} images (train, validation, test), {imgs.nbytes / 2**20:.1f} MiB raw")
    buf = io.BytesIO()
    t = time.perf_counter()
    np.savez_compressed(buf, images=imgs)
    print(f"np.savez_compressed: {len(buf.getvalue()) / 2**20:.1f} MiB in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    packed = lzma.compress(imgs.tobytes(), preset=6)
    print(f"xz (lzma preset 6): {len(packed) / 2**20:.1f} MiB in {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
