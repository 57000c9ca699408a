"""Per-image cost in a DataLoader worker of the two decodes of image files (ImageNet-LT, Places-LT,
iNaturalist, your own lists or image folder; longtail.data.listfile.ListDataset), on synthetic JPEGs
of typical ImageNet size:

- centre: short side to 256 and a centre 224 x 224 crop (evaluation, and training under the recipes
  that augment on the device);
- random_resized: torchvision's RandomResizedCrop(224) from the whole decoded image (training under
  the "imagenet" recipes; the device then only flips and jitters).

(Before 2026-12-03 training under the "imagenet" recipe decoded a centre 256 x 256 square and took
the random resized crop from it on the device; that decode is gone.)

    python benchmarks/decode_cost.py [--images 64] [--reps 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from longtail.data.listfile import crop_generator, decode_image, decode_random_resized


def make_jpegs(folder: Path, n: int) -> list[Path]:
    """Smooth random images (JPEG compresses them like photographs, unlike white noise), in the
    sizes ImageNet mostly has: 500 x 375, 375 x 500 and 500 x 333."""
    rng = np.random.default_rng(0)
    sizes = [(375, 500), (500, 375), (333, 500)]
    paths = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        small = rng.integers(0, 256, size=(h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        paths.append(folder / f"{i}.jpg")
        img.save(paths[-1], quality=90)
    return paths


def best_ms(fn, paths, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        for k, p in enumerate(paths):
            fn(p, k)
        times.append((time.perf_counter() - t) / len(paths) * 1000)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", help="also write the table here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_jpegs(Path(tmp), args.images)
        centre = best_ms(lambda p, k: decode_image(p, 256, 224), paths, args.reps)
        rrc = best_ms(lambda p, k: decode_random_resized(p, 224, crop_generator((0, 0, 0, 0, k))), paths, args.reps)
    lines = [f"decode per image, one process, {args.images} synthetic JPEGs (500x375 / 375x500 / 500x333), "
             f"best of {args.reps}", "",
             "| decode | ms / image | vs centre |", "|---|---|---|",
             f"| centre (short side 256, centre 224x224) | {centre:.2f} | 1.00x |",
             f"| random_resized (RandomResizedCrop(224) from the whole image) | {rrc:.2f} | {rrc / centre:.2f}x |"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
