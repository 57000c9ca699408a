"""Images per second of `longtail.predict.predict_images` on CPU (decode from files + normalise + forward)
against the forward alone on the same images already decoded to uint8 tensors (normalise + forward):
how much of prediction's time goes to reading the files. Synthetic images, random weights.

    python benchmarks/predict_speed.py [--images 64] [--reps 3] [--threads 2] [--workers 0]

Cases: a ResNet-18 at 224 (JPEGs of ImageNet size, resized to 256 and centre-cropped) and a ResNet-32
at 32 (32 x 32 PNGs, as CIFAR).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from longtail.data.augment import normalize
from longtail.data.listfile import decode_image
from longtail.models import build_model
from longtail.predict import predict_images

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CASES = [  # model, image_size, resize, file (h, w) sizes, file format
    ("resnet18", 224, 256, [(375, 500), (500, 375), (333, 500)], "jpg"),
    ("resnet32", 32, 32, [(32, 32)], "png"),
]


def make_images(folder: Path, n: int, sizes, ext: str) -> list[str]:
    """Smooth random images (they compress like photographs, unlike white noise)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        small = rng.integers(0, 256, size=(h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        path = folder / f"{i}.{ext}"
        Image.fromarray(small).resize((w, h), Image.BICUBIC).save(path, quality=90)
        paths.append(str(path))
    return paths


def best_rate(fn, n: int, reps: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection stay out of the rate
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0, help="decoding processes for predict_images")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} torch threads, {args.workers} decode workers, batch {args.batch_size}, "
          f"{args.images} images, best of {args.reps}\n")
    print("| model @ size | predict (files) img/s | forward only img/s | predict / forward |")
    print("|---|---|---|---|")
    for name, size, resize, sizes, ext in CASES:
        torch.manual_seed(0)
        model = build_model(name, 10).eval()
        with tempfile.TemporaryDirectory() as tmp:
            files = make_images(Path(tmp), args.images, sizes, ext)
            decoded = torch.stack([decode_image(f, resize, size) for f in files])

            def predict():
                rows, failures = predict_images(model, files, image_size=size, resize=resize, mean=MEAN, std=STD,
                                                batch_size=args.batch_size, workers=args.workers, progress=False)
                assert len(rows) == len(files) and not failures

            @torch.no_grad()
            def forward():
                for batch in decoded.split(args.batch_size):
                    model(normalize(batch, MEAN, STD)).softmax(1)

            with_files = best_rate(predict, len(files), args.reps)
            alone = best_rate(forward, len(files), args.reps)
        print(f"| {name} @ {size} | {with_files:.1f} | {alone:.1f} | {with_files / alone:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
