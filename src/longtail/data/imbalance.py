"""Long-tailed subsets and validation splits.

- :func:`lt_counts`: the exponential profile n_i = floor(n_max * IF^(-i/(C-1))).
- :func:`select_lt_indices`: the community's CIFAR-LT selection (LDAM-DRW's ``IMBALANCECIFAR``),
  reproduced exactly, so that results are comparable with published numbers.
- :func:`balanced_validation_indices`: a balanced validation set from images left out of the subset.
- :func:`split_validation`: the same, handling classes (the CIFAR-LT head class) with too few left out.
- :func:`limit_per_class`: cap a selection per class for tiny runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "lt_counts",
    "select_lt_indices",
    "balanced_validation_indices",
    "split_validation",
    "limit_per_class",
    "as_numpy_labels",
]


def as_numpy_labels(labels) -> np.ndarray:
    """Labels (list, numpy or torch) as a 1-D int64 numpy array."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def lt_counts(n_max: int, num_classes: int, imb_factor: float) -> list[int]:
    """Per-class counts n_i = floor(n_max * IF^(-i/(C-1))), i = 0..C-1 (head class first).

    Computed as ``int(n_max * (1/IF) ** (i / (C - 1.0)))``, the exact floating-point expression of
    LDAM-DRW's ``get_img_num_per_cls`` (which is given 1/IF), so counts match the published subsets.
    ``imb_factor`` = n_max / n_min must be >= 1 (1 gives a balanced set).
    """
    if not imb_factor >= 1:  # also rejects NaN
        raise ValueError(f"imb_factor must be >= 1 (n_max / n_min), got {imb_factor}; use e.g. 100, not 0.01")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    ratio = 1.0 / float(imb_factor)
    return [int(n_max * (ratio ** (i / (num_classes - 1.0)))) for i in range(num_classes)]


def select_lt_indices(labels, counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """Indices of the long-tailed subset, exactly as LDAM-DRW's ``gen_imbalanced_data``.

    ``np.random.seed(seed)`` once on numpy's legacy global generator, then for each class c in label
    order: ``idx = np.where(labels == c)[0]; np.random.shuffle(idx); keep idx[:counts[c]]``. The kept
    indices are returned concatenated in that order (class 0's first). The global numpy random state
    is saved and restored, so callers are unaffected (and a caller's state does not affect the result).
    """
    y = as_numpy_labels(labels)
    counts = [int(c) for c in counts]
    num_classes = len(counts)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels span [{y.min()}, {y.max()}] but counts has {num_classes} entries")
    have = np.bincount(y, minlength=num_classes)
    short = [(c, int(have[c]), n) for c, n in enumerate(counts) if n > have[c] or n < 0]
    if short:
        c, h, n = short[0]
        raise ValueError(
            f"class {c} has {h} images but {n} were asked for ({len(short)} classes affected); "
            "lower n_max or the imbalance factor"
        )
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        parts = []
        for c, n in enumerate(counts):
            idx = np.where(y == c)[0]
            np.random.shuffle(idx)
            parts.append(idx[:n])
    finally:
        np.random.set_state(state)
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def balanced_validation_indices(labels, exclude, per_class: int = 20, seed: int = 0,
                                num_classes: int | None = None) -> np.ndarray:
    """``per_class`` images of every class, drawn from the images NOT in ``exclude``.

    Fixed by ``np.random.default_rng(seed)`` (independent of numpy's global state): for each class in
    label order the remaining candidates (in file order) are permuted and the first ``per_class``
    kept, so a smaller ``per_class`` gives a subset of a larger one. Returned grouped by class, each
    class's indices sorted. Raises ValueError if a class has fewer than ``per_class`` left.
    """
    y = as_numpy_labels(labels)
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    excluded = np.zeros(y.shape[0], dtype=bool)
    ex = np.asarray(exclude, dtype=np.int64).reshape(-1)
    if ex.size and (ex.min() < 0 or ex.max() >= y.shape[0]):
        raise ValueError(f"exclude holds indices outside [0, {y.shape[0]})")
    excluded[ex] = True
    rng = np.random.default_rng(seed)
    parts = []
    for c in range(num_classes):
        cand = np.flatnonzero((y == c) & ~excluded)
        if cand.size < per_class:
            raise ValueError(
                f"class {c} has only {cand.size} images left outside the training subset, "
                f"but val_per_class={per_class} were asked for; lower val_per_class to at most {cand.size}"
            )
        perm = rng.permutation(cand.size)
        parts.append(np.sort(cand[perm[:per_class]]))
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def limit_per_class(labels, indices, k: int | None) -> np.ndarray:
    """Keep, in order, only the first ``k`` of ``indices`` of each class (``labels[indices]``).

    ``k=None`` returns ``indices`` unchanged. For tiny smoke runs.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if k is None:
        return idx
    if k < 1:
        raise ValueError(f"limit per class must be >= 1 or None, got {k}")
    y = as_numpy_labels(labels)[idx]
    if y.size == 0:
        return idx
    # rank of each element within its class, in order of appearance
    order = np.argsort(y, kind="stable")
    ys = y[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ys)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, ys.size]))
    rank = np.empty_like(order)
    rank[order] = np.arange(ys.size) - group_start
    return idx[rank < k]


def split_validation(labels, lt_indices, per_class: int = 20, seed: int = 0, num_classes: int | None = None,
                     shortfall: str = "move") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced validation set disjoint from the training subset; returns (train, val, moved).

    The head class of CIFAR-LT keeps ALL its training images (n_0 = n_max), so no left-over image
    exists for its validation share (on CIFAR-100-LT IF10 class 1 also has only 12 left). What to do
    when a class has fewer than ``per_class`` left over:

    - ``"move"`` (default): the missing number of images is moved from that class's training
      selection to validation: the LAST ones of ``lt_indices`` for that class (the end of the
      community's shuffled order). Validation stays balanced and disjoint from training; training
      loses those images (CIFAR-100-LT: 20 of class 0's 500, so IF100 trains on 10,827 images, not
      10,847; CIFAR-10-LT: 20 of 5,000). ``moved`` lists them.
    - ``"error"``: raise ValueError (training keeps the exact published subset, no validation set).

    ``train`` keeps the order of ``lt_indices``; ``val`` is :func:`balanced_validation_indices` of
    the left-over plus moved images, fixed by ``seed``.
    """
    if shortfall not in ("move", "error"):
        raise ValueError(f"shortfall must be 'move' or 'error', got {shortfall!r}")
    y = as_numpy_labels(labels)
    lt = np.asarray(lt_indices, dtype=np.int64).reshape(-1)
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    selected = np.zeros(y.shape[0], dtype=bool)
    selected[lt] = True
    left = np.bincount(y[~selected], minlength=num_classes)
    moved_parts = []
    for c in np.flatnonzero(left < per_class):
        if shortfall == "error":
            break  # balanced_validation_indices raises with the details
        need = int(per_class - left[c])
        of_c = lt[y[lt] == c]
        if of_c.size < need + 1:
            raise ValueError(
                f"class {c} has {int(left[c])} images left over and {of_c.size} in the training subset: "
                f"too few for val_per_class={per_class} plus training; lower val_per_class"
            )
        moved_parts.append(of_c[-need:])
    moved = np.concatenate(moved_parts) if moved_parts else np.zeros(0, dtype=np.int64)
    train = lt[~np.isin(lt, moved)] if moved.size else lt
    val = balanced_validation_indices(y, train, per_class, seed=seed, num_classes=num_classes)
    return train, val, moved
