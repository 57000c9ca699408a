"""Class-balanced batches and mixup: distributions, determinism, the split across ranks."""
import numpy as np
import pytest
import torch

from longtail.data.mixup import mix, mixed_loss, mixup_draw, mixup_epoch
from longtail.data.sampling import class_balanced_batches, class_balanced_order, epoch_batches
from longtail.losses import CrossEntropy


def long_tailed_labels():
    counts = [500, 200, 80, 30, 10, 3]
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))], counts


def test_class_balanced_draws_every_class_equally_and_every_image_of_a_class_equally():
    labels, counts = long_tailed_labels()
    draws = torch.cat([class_balanced_order(labels, epoch=e, seed=1) for e in range(60)])
    assert len(draws) == 60 * len(labels)
    per_class = np.bincount(labels[draws].numpy(), minlength=6) / len(draws)
    # a class is 1/6 of the draws (binomial sd ~ 0.0019 here), not its share of the data (0.61 for class 0)
    np.testing.assert_allclose(per_class, 1 / 6, atol=0.01)
    # within the rarest class (3 images), each image a third of that class's draws
    rare = draws[labels[draws] == 5]
    _, hits = torch.unique(rare, return_counts=True)
    assert len(hits) == 3
    np.testing.assert_allclose(hits.numpy() / len(rare), 1 / 3, atol=0.03)


def test_class_balanced_batches_are_fixed_by_seed_and_epoch_and_split_across_ranks():
    labels, _ = long_tailed_labels()
    one = class_balanced_batches(labels, 64, epoch=2, seed=5)
    assert len(one) == len(labels) // 64 and all(len(b) == 64 for b in one)
    again = class_balanced_batches(labels, 64, epoch=2, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(one, again))
    assert not torch.equal(class_balanced_batches(labels, 64, epoch=3, seed=5)[0], one[0])
    two = [class_balanced_batches(labels, 64, epoch=2, seed=5, rank=r, world=2) for r in range(2)]
    for b, r0, r1 in zip(one, *two):
        assert r0.tolist() + r1.tolist() == b.tolist()
    keep = class_balanced_batches(labels, 64, epoch=2, seed=5, drop_last=False)
    assert sum(len(b) for b in keep) == len(labels)
    with pytest.raises(ValueError, match="non-empty"):
        class_balanced_order(torch.tensor([], dtype=torch.long), 0, 0)


def test_instance_order_is_unchanged_by_the_move():
    # the instance sampler's permutation is what every archived run trained with
    g = torch.Generator().manual_seed(7 * 100_003 + 4)
    assert torch.equal(torch.cat(epoch_batches(103, 16, 4, 7, drop_last=False)), torch.randperm(103, generator=g))


def test_mixup_mixes_images_and_losses_with_one_lambda():
    lam, perm = mixup_draw(8, 1.0, seed=0, epoch=3, step=5)
    assert 0 <= lam <= 1 and sorted(perm.tolist()) == list(range(8))
    lam2, perm2 = mixup_draw(8, 1.0, seed=0, epoch=3, step=5)
    assert lam == lam2 and torch.equal(perm, perm2)  # a resumed step mixes the same way
    assert mixup_draw(8, 1.0, seed=0, epoch=3, step=6)[0] != lam
    assert mixup_draw(8, 1.0, seed=0, epoch=4, step=5)[0] != lam
    lam_r1, perm_r1 = mixup_draw(8, 1.0, seed=0, epoch=3, step=5, rank=1)
    assert lam_r1 == lam and not torch.equal(perm_r1, perm)  # DDP: one lam, each rank its own pairs
    x = torch.randn(8, 3, 4, 4)
    torch.testing.assert_close(mix(x, lam, perm), lam * x + (1 - lam) * x[perm])
    z, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    ce = CrossEntropy([9, 5, 3, 2, 1])
    want = lam * torch.nn.functional.cross_entropy(z, y) + (1 - lam) * torch.nn.functional.cross_entropy(z, y[perm])
    torch.testing.assert_close(mixed_loss(ce, z, y, lam, perm), want)
    # Beta(1, 1) is uniform: mean 1/2, variance 1/12
    lams = np.array([mixup_draw(4, 1.0, 0, 0, s)[0] for s in range(4000)])
    assert lams.mean() == pytest.approx(0.5, abs=0.015) and lams.var() == pytest.approx(1 / 12, abs=0.005)
    # Beta(0.2, 0.2) piles up near 0 and 1
    assert np.mean([min(lam, 1 - lam) < 0.1 for lam in (mixup_draw(4, 0.2, 0, 0, s)[0] for s in range(2000))]) > 0.5
    with pytest.raises(ValueError, match="positive"):
        mixup_draw(4, 0.0, 0, 0, 0)


def test_an_epochs_mixup_pairs_are_each_steps_draws():
    # what the trainer takes at the start of an epoch (or of its resumed rest) is exactly what each
    # step would draw; the last batch may be smaller (drop_last false)
    sizes = [16, 16, 16, 5]
    plan = mixup_epoch(sizes[2:], 0.5, seed=3, epoch=7, first_step=2, rank=1)
    assert len(plan) == 2
    for i, (lam, perm) in enumerate(plan):
        want_lam, want_perm = mixup_draw(sizes[2 + i], 0.5, seed=3, epoch=7, step=2 + i, rank=1)
        assert lam == want_lam and torch.equal(perm, want_perm)
    assert mixup_epoch([], 1.0, 0, 0) == []
    assert mixup_epoch([4], 1.0, 0, 0, device="meta")[0][1].device.type == "meta"
