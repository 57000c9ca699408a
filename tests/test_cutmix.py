"""CutMix (Yun et al. 2019) against a numpy re-statement of the released code (clovaai/CutMix-PyTorch,
train.py: the cutmix branch of train() and rand_bbox)."""
import numpy as np
import pytest
import torch

from longtail.data.mixup import CUTMIX_TAG, cut, cutmix_draw, cutmix_epoch, mixed_loss
from longtail.losses import CrossEntropy


def released_rand_bbox(size, lam, cx, cy):
    """rand_bbox as released, with its centre draws passed in (the release calls np.random.randint)."""
    W = size[2]
    H = size[3]
    cut_rat = np.sqrt(1. - lam)
    cut_w = int(W * cut_rat)
    cut_h = int(H * cut_rat)
    bbx1 = np.clip(cx - cut_w // 2, 0, W)
    bby1 = np.clip(cy - cut_h // 2, 0, H)
    bbx2 = np.clip(cx + cut_w // 2, 0, W)
    bby2 = np.clip(cy + cut_h // 2, 0, H)
    return bbx1, bby1, bbx2, bby2


def released_step(size, alpha, prob, seed, epoch, step):
    """The release's draws in its order (r, lam, cx, cy), taken from the step's keyed generator:
    None when skipped, else (box, lam adjusted to the box's area)."""
    gen = np.random.default_rng([seed, epoch, step, CUTMIX_TAG])
    r = gen.random()
    if not (alpha > 0 and r < prob):
        return None
    lam = gen.beta(alpha, alpha)
    bbx1, bby1, bbx2, bby2 = released_rand_bbox(size, lam, gen.integers(size[2]), gen.integers(size[3]))
    lam = 1 - ((bbx2 - bbx1) * (bby2 - bby1) / (size[-1] * size[-2]))
    return (bbx1, bby1, bbx2, bby2), lam


@pytest.mark.parametrize("height,width,alpha", [(32, 32, 1.0), (24, 40, 0.5), (7, 5, 2.0)])
def test_boxes_and_lams_are_the_released_formula_on_the_same_draws(height, width, alpha):
    size = (16, 3, height, width)
    clipped = 0
    for step in range(1500):
        want = released_step(size, alpha, 0.7, seed=3, epoch=2, step=step)
        got = cutmix_draw(16, alpha, 0.7, seed=3, epoch=2, step=step, height=height, width=width)
        assert (got is None) == (want is None)
        if got is None:
            continue
        box, lam = want
        assert got.box == tuple(int(v) for v in box)  # (top, left, bottom, right): rows on dim 2
        assert got.lam == lam
        top, left, bottom, right = got.box
        assert 0 <= top <= bottom <= height and 0 <= left <= right <= width
        clipped += top == 0 or left == 0 or bottom == height or right == width
    assert clipped > 100  # the border clipping was exercised


def test_the_box_is_pasted_from_the_partner_and_the_rest_kept():
    b, c, h, w = 6, 2, 9, 11
    x = torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c, h, w)
    before = x.clone()
    perm = torch.tensor([3, 0, 5, 1, 2, 4])
    box = (2, 4, 7, 11)  # touches the right border
    out = cut(x, box, perm).numpy()
    assert torch.equal(x, before)  # a new tensor
    xs = x.numpy()
    for i in range(b):
        for r in range(h):
            for col in range(w):
                inside = box[0] <= r < box[2] and box[1] <= col < box[3]
                src = xs[perm[i], :, r, col] if inside else xs[i, :, r, col]
                np.testing.assert_array_equal(out[i, :, r, col], src)


def test_lam_is_the_share_of_pixels_each_image_keeps():
    b, h, w = 8, 12, 20
    x = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(0))  # all values distinct
    seen = 0
    for step in range(200):
        draw = cutmix_draw(b, 1.0, 1.0, seed=0, epoch=0, step=step, height=h, width=w)
        top, left, bottom, right = draw.box
        assert draw.lam == 1.0 - (bottom - top) * (right - left) / (h * w)
        perm = draw.perm
        moved = perm != torch.arange(b)
        changed = (cut(x, draw.box, perm) != x).all(dim=1)  # pixel by pixel, over the channels
        kept_share = 1.0 - changed.double().mean(dim=(1, 2))
        assert torch.allclose(kept_share[moved], torch.full((int(moved.sum()),), draw.lam, dtype=torch.float64))
        assert not changed[~moved].any()  # an image paired with itself is unchanged
        seen += bool(moved.any())
    assert seen > 150


def test_the_same_keys_give_the_same_draws_and_an_epoch_is_its_steps():
    sizes = [16, 16, 16, 16, 5]
    kw = dict(height=32, width=32)
    plan = cutmix_epoch(sizes[2:], 1.0, 0.5, seed=4, epoch=9, first_step=2, rank=1, **kw)
    again = cutmix_epoch(sizes[2:], 1.0, 0.5, seed=4, epoch=9, first_step=2, rank=1, **kw)
    assert len(plan) == 3
    for i, (draw, repeat) in enumerate(zip(plan, again)):
        single = cutmix_draw(sizes[2 + i], 1.0, 0.5, seed=4, epoch=9, step=2 + i, rank=1, **kw)
        for d in (repeat, single):
            assert (d is None) == (draw is None)
            if draw is not None:
                assert d.lam == draw.lam and d.box == draw.box and torch.equal(d.perm, draw.perm)
    other_epoch = [cutmix_draw(16, 1.0, 1.0, 4, 10, s, **kw) for s in range(5)]
    this_epoch = [cutmix_draw(16, 1.0, 1.0, 4, 9, s, **kw) for s in range(5)]
    assert [d.box for d in other_epoch] != [d.box for d in this_epoch]
    assert cutmix_epoch([], 1.0, 0.5, 0, 0, **kw) == []
    on_meta = cutmix_epoch([4, 4], 1.0, 1.0, 0, 0, device="meta", **kw)
    assert all(d.perm.device.type == "meta" for d in on_meta)


def test_ranks_share_the_skip_lam_and_box_and_permute_their_own_share():
    kw = dict(height=32, width=32)
    for step in range(30):
        r0 = cutmix_draw(8, 1.0, 0.5, 1, 0, step, rank=0, **kw)
        r1 = cutmix_draw(8, 1.0, 0.5, 1, 0, step, rank=1, **kw)
        assert (r0 is None) == (r1 is None)
        if r0 is not None:
            assert r0.lam == r1.lam and r0.box == r1.box and not torch.equal(r0.perm, r1.perm)


@pytest.mark.parametrize("prob", [0.0, 0.3, 0.5, 1.0])
def test_a_step_is_cut_with_probability_prob(prob):
    plan = cutmix_epoch([4] * 4000, 1.0, prob, seed=7, epoch=1, height=8, width=8)
    cut_share = np.mean([d is not None for d in plan])
    if prob in (0.0, 1.0):
        assert cut_share == prob
    else:  # binomial sd sqrt(p(1-p)/4000) < 0.008
        assert cut_share == pytest.approx(prob, abs=0.03)


def test_the_loss_is_mixed_by_the_boxs_lam():
    draw = cutmix_draw(8, 1.0, 1.0, seed=0, epoch=0, step=3, height=16, width=16)
    z, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 5, (8,))
    ce = CrossEntropy([9, 5, 3, 2, 1])
    f = torch.nn.functional.cross_entropy
    want = draw.lam * f(z, y) + (1 - draw.lam) * f(z, y[draw.perm])
    torch.testing.assert_close(mixed_loss(ce, z, y, draw.lam, draw.perm), want)


@pytest.mark.parametrize("kwargs,match", [(dict(alpha=0.0), "alpha must be positive"),
                                          (dict(prob=1.5), "prob must lie in"),
                                          (dict(height=0), "image size")])
def test_bad_settings_raise(kwargs, match):
    args = dict(alpha=1.0, prob=0.5, height=8, width=8) | kwargs
    with pytest.raises(ValueError, match=match):
        cutmix_epoch([4], args["alpha"], args["prob"], 0, 0, height=args["height"], width=args["width"])
