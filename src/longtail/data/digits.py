"""The embedded demo dataset: scikit-learn's handwritten digits, made long-tailed.

``sklearn.datasets.load_digits`` ships with scikit-learn (no download): 1,797 grayscale 8x8 images,
values 0..16, classes 0-9 with 174-183 images each. Here they become uint8 (N, 1, 8, 8) images
scaled to 0..255 (round(v * 255 / 16)) and are split, per class, by one fixed permutation
(``np.random.default_rng(seed)``, classes in label order):

- test: the first ``test_per_class`` (default 50) of each class (balanced, 500 images);
- validation: the next ``val_per_class`` (default 10) of each class (balanced, 100 images);
- train: from the rest, the first n_c of each class with n_c = lt_counts(n_max, 10, imb_factor),
  n_max = the fewest images any class has left (114 with the defaults: class 8 has 174 - 60).

With the defaults (imb_factor 20, 50 / 10 per class) the training counts are
``[114, 81, 58, 41, 30, 21, 15, 11, 7, 5]`` (383 images), head class 0, tail class 9.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .imbalance import lt_counts

__all__ = ["DigitsLT", "load_digits_lt", "digits_images"]


@dataclass
class DigitsLT:
    """Tensors of the three splits; ``*_idx`` are positions in ``load_digits()``'s order."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    train_idx: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    val_idx: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    test_idx: torch.Tensor
    class_counts: list[int]


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 (N, 1, 8, 8) in 0..255 and int64 labels, in scikit-learn's order."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    return images, d.target.astype(np.int64)


def load_digits_lt(imb_factor: float = 20, test_per_class: int = 50, val_per_class: int = 10,
                   seed: int = 0) -> DigitsLT:
    """Long-tailed train, balanced validation and balanced test splits of the digits (see module doc)."""
    images, labels = digits_images()
    rng = np.random.default_rng(seed)
    test, val, pools = [], [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        if idx.size < test_per_class + val_per_class + 1:
            raise ValueError(
                f"digit class {c} has {idx.size} images, too few for test_per_class={test_per_class} "
                f"+ val_per_class={val_per_class} + training; lower them"
            )
        idx = idx[rng.permutation(idx.size)]
        test.append(idx[:test_per_class])
        val.append(idx[test_per_class:test_per_class + val_per_class])
        pools.append(idx[test_per_class + val_per_class:])
    n_max = min(p.size for p in pools)
    counts = lt_counts(n_max, 10, imb_factor)
    train = [p[:n] for p, n in zip(pools, counts)]

    def pick(parts):
        i = np.concatenate(parts)
        return torch.from_numpy(images[i].copy()), torch.from_numpy(labels[i].copy()), torch.from_numpy(i)

    tr, va, te = pick(train), pick(val), pick(test)
    return DigitsLT(*tr, *va, *te, class_counts=counts)
