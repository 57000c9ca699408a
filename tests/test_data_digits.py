"""The embedded digits demo dataset."""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from longtail.config import ConfigError, DataConfig, config_from_dict
from longtail.data import load_benchmark
from longtail.data.digits import digits_images, load_digits_lt


@pytest.fixture(scope="module")
def sk():
    return load_digits()


def test_images_scaled_to_uint8(sk):
    images, labels = digits_images()
    assert images.dtype == np.uint8 and images.shape == (1797, 1, 8, 8)
    assert images.max() == 255 and images.min() == 0
    assert np.array_equal(images[:, 0], np.floor(sk.images * 255 / 16 + 0.5).astype(np.uint8))
    assert np.array_equal(labels, sk.target)


def test_splits_counts_and_disjointness(sk):
    d = load_digits_lt()
    per_class = np.bincount(sk.target)
    n_max = int((per_class - 60).min())
    expected = [math.floor(n_max * 20 ** (-i / 9)) for i in range(10)]
    assert n_max == 114 and d.class_counts == expected == [114, 81, 58, 41, 30, 21, 15, 11, 7, 5]
    assert torch.bincount(d.train_labels, minlength=10).tolist() == expected
    assert torch.bincount(d.val_labels).tolist() == [10] * 10
    assert torch.bincount(d.test_labels).tolist() == [50] * 10
    sets = [set(x.tolist()) for x in (d.train_idx, d.val_idx, d.test_idx)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    images, _ = digits_images()
    for imgs, labs, idx in ((d.train_images, d.train_labels, d.train_idx), (d.test_images, d.test_labels, d.test_idx)):
        assert torch.equal(imgs, torch.from_numpy(images[idx.numpy()]))
        assert torch.equal(labs, torch.from_numpy(sk.target[idx.numpy()]))


def test_fixed_by_seed():
    a, b, c = load_digits_lt(), load_digits_lt(), load_digits_lt(seed=1)
    assert torch.equal(a.train_idx, b.train_idx) and torch.equal(a.test_idx, b.test_idx)
    assert not torch.equal(a.test_idx, c.test_idx)
    assert load_digits_lt(imb_factor=1).class_counts == [114] * 10
    with pytest.raises(ValueError, match="too few"):
        load_digits_lt(test_per_class=170)


def digits(**kw):
    """The digits benchmark at the demo's imbalance and validation size (DataConfig's defaults are CIFAR's)."""
    return load_benchmark(DataConfig(**{"name": "digits-lt", "imb_factor": 20, "val_per_class": 10, **kw}))


def test_digits_benchmark():
    b = digits(root="/ignored/path")
    assert b.num_classes == 10 and b.image_size == 8 and b.class_names == [str(i) for i in range(10)]
    assert b.class_counts == [114, 81, 58, 41, 30, 21, 15, 11, 7, 5] and len(b.train) == 383
    assert (len(b.val), len(b.test)) == (100, 500)
    assert b.channels == 1
    x = b.train.images.float() / 255
    assert b.mean == pytest.approx((x.mean().item(),)) and b.std == pytest.approx((x.std().item(),))
    assert b.train.images.shape == (383, 1, 8, 8) and b.train.images.dtype == torch.uint8
    moved = b.test.to("cpu")
    assert torch.equal(moved.images, b.test.images) and len(moved) == 500
    tiny = digits(limit_per_class=6, limit_eval_per_class=3)
    assert tiny.class_counts == [6, 6, 6, 6, 6, 6, 6, 6, 6, 5] and len(tiny.test) == 30
    # the cap keeps the first images of the full split
    assert torch.equal(tiny.train.source_indices[:6], b.train.source_indices[:6])
    assert digits(imb_factor=10).class_counts[-1] == math.floor(114 / 10)


def test_split_seed():
    base = digits()
    a, b = digits(val_seed=1), digits(val_seed=1)
    assert torch.equal(a.val.source_indices, b.val.source_indices)
    assert torch.equal(a.val.source_indices, load_digits_lt(imb_factor=20, val_per_class=10, seed=1).val_idx)
    assert not torch.equal(a.val.source_indices, base.val.source_indices)
    assert a.class_counts == base.class_counts


@pytest.mark.parametrize("value, message", [(-3, r"must be >= 0, got -3"), (2**32, r"must be < 4294967296, got "),
                                            (1.5, r"must be an integer, got 1.5")])
def test_bad_split_seeds_are_named(value, message):
    # a negative seed once surfaced as numpy's bare "expected non-negative integer"
    with pytest.raises(ConfigError, match=rf"^data\.val_seed {message}"):
        config_from_dict({"data": {"name": "digits-lt", "val_seed": value}})


@pytest.mark.parametrize("removed", ["seed", "lt_seed"])
def test_removed_seed_keys_are_refused(removed):
    # the CIFAR-LT subset is always the community's and the split's seed is val_seed: no other seed is read
    with pytest.raises(ConfigError, match=rf"unknown key 'data\.{removed}'"):
        config_from_dict({"data": {"name": "digits-lt", removed: 1}})
