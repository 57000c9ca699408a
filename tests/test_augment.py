"""Batched augmentation, checked against independent computations: numpy pad/slice/loops, and PIL
running the DeepVoltaire CIFAR10Policy operations the released GALA code uses."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from longtail.data import augment as A
from longtail.data import autoaugment as AA

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def smooth_images(n, size=32, seed=0):
    """Natural-ish uint8 RGB images (upsampled noise): varied histograms, smooth regions and edges."""
    rng = np.random.RandomState(seed)
    arr = np.stack([np.array(Image.fromarray(rng.randint(0, 256, (8, 8, 3)).astype(np.uint8))
                             .resize((size, size), Image.BILINEAR)) for _ in range(n)])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def pil_apply(x, fn):
    arr = x.permute(0, 2, 3, 1).numpy()
    return torch.from_numpy(np.stack([np.array(fn(Image.fromarray(im))) for im in arr])).permute(0, 3, 1, 2)


def denorm(y):
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return y * s + m


# ------------------------------------------------------------------------------------ recipes

@pytest.mark.parametrize("kind", A.AUGMENTS)
def test_train_augment_shape_dtype_range_and_determinism(kind):
    x = smooth_images(16)
    aug = A.build_train_augment(kind, MEAN, STD, 32)
    y1 = aug(x, torch.Generator().manual_seed(1))
    y2 = aug(x, torch.Generator().manual_seed(1))
    y3 = aug(x, torch.Generator().manual_seed(2))
    assert y1.shape == (16, 3, 32, 32) and y1.dtype == torch.float32
    v = denorm(y1)
    assert v.min() >= -1e-5 and v.max() <= 1 + 1e-5
    assert torch.equal(y1, y2)
    if kind == "none":
        assert torch.equal(y1, y3)
        ref = (x.double() / 255 - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) \
            / torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
        torch.testing.assert_close(y1.double(), ref, atol=1e-5, rtol=0)
        assert torch.equal(y1, A.build_eval_transform(MEAN, STD)(x))
    else:
        assert not torch.equal(y1, y3)


def test_imagenet_recipe_output_size():
    x = smooth_images(4, size=48)
    y = A.build_train_augment("imagenet", MEAN, STD, 24)(x, torch.Generator().manual_seed(0))
    assert y.shape == (4, 3, 24, 24)


def test_imagenet_on_cropped_batches_only_flips_and_jitters():
    # gray images with a curved left-to-right profile: brightness and contrast are affine maps per
    # image, saturation leaves gray alone and Normalize is affine, so each output row is an affine
    # function of the input row or of its mirror; any crop or resampling would break that
    cols = 40 + 0.16 * torch.arange(24, dtype=torch.float32) ** 2  # 40-125: no jitter factor clips it
    x = cols.round().view(1, 1, 1, 24).expand(64, 3, 24, 24).to(torch.uint8).contiguous()
    aug = A.build_train_augment("imagenet", MEAN, STD, 24, cropped=True)
    assert "cropped=True" in repr(aug)
    y = aug(x, torch.Generator().manual_seed(0))
    assert y.shape == (64, 3, 24, 24)
    profile = x[0, 0, 0].double()
    design = {False: torch.stack([profile, torch.ones(24, dtype=torch.float64)], 1),
              True: torch.stack([profile.flip(0), torch.ones(24, dtype=torch.float64)], 1)}
    mirrored = []
    for row in y[:, 0, 12].double():
        fits = {m: torch.linalg.lstsq(d, row.unsqueeze(1)).solution for m, d in design.items()}
        err = {m: (design[m] @ fits[m] - row.unsqueeze(1)).abs().max().item() for m in design}
        m = min(err, key=err.get)
        assert err[m] < 1e-4 and err[not m] > 1e-2 and fits[m][0].item() > 0
        mirrored.append(m)
    assert 16 < sum(mirrored) < 48  # flipped with probability 1/2
    assert (y[:, :, :1] == y[:, :, 12:13]).all()  # rows stay alike: nothing moved vertically
    with pytest.raises(ValueError, match="cropped 'imagenet' batches must be 24x24"):
        aug(smooth_images(2, size=32), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="goes with 'imagenet'"):
        A.build_train_augment("crop_flip", MEAN, STD, 24, cropped=True)


PIL_JITTER = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)


def test_color_jitter_on_pil_images_is_imageenhance_in_each_images_order():
    # torchvision's ColorJitter on a PIL image: brightness, contrast and saturation are ImageEnhance
    # Brightness, Contrast and Color, each rounded to 8 bits before the next
    x = smooth_images(12, size=16, seed=4)
    factors = torch.empty(12, 3).uniform_(0.6, 1.4, generator=torch.Generator().manual_seed(1))
    order = A._JITTER_ORDERS[torch.arange(12) % 6]
    for sync_free in (False, True):
        y = A.color_jitter(x.float(), factors, order, max_value=255.0, sync_free=sync_free, pil=True)
        for i in range(12):
            img = Image.fromarray(x[i].permute(1, 2, 0).numpy())
            for op in order[i].tolist():
                img = PIL_JITTER[op](img).enhance(float(factors[i, op]))
            assert torch.equal(y[i], torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float()), (i, sync_free)
    # the tensor semantics differ (no rounding, the contrast mean of the float grey image)
    assert not torch.equal(A.color_jitter(x.float(), factors, order, max_value=255.0), y)


def test_imagenet_randaugment_on_cropped_batches_flips_jitters_as_pil_then_randaugments():
    from longtail.data import randaugment as RA

    x = smooth_images(16, size=24, seed=6)
    aug = A.build_train_augment("imagenet_randaugment", MEAN, STD, 24, cropped=True)
    assert aug.fill == (125, 123, 114)  # round(255 * mean): what RandAugment fills with
    y = aug(x, torch.Generator().manual_seed(9))
    # the same draws, in the recipe's order: flip, jitter (factors, then orders), RandAugment
    g = torch.Generator().manual_seed(9)
    flip = torch.rand(16, generator=g) < 0.5
    factors = torch.empty(16, 3).uniform_(0.6, 1.4, generator=g)
    order = A._JITTER_ORDERS[torch.randint(0, 6, (16,), generator=g)]
    params = RA.draw_rand_augment(16, g)
    jittered = []
    for i in range(16):
        img = Image.fromarray(x[i].permute(1, 2, 0).numpy())
        if flip[i]:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        for op in order[i].tolist():
            img = PIL_JITTER[op](img).enhance(float(factors[i, op]))
        jittered.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
    want = RA.apply_rand_augment(torch.stack(jittered), params, fill=(125, 123, 114))
    assert torch.allclose(y, A.normalize(want, MEAN, STD))
    assert params["applied"].any()  # RandAugment did act on some of them


def test_imagenet_randaugment_on_whole_batches_pads_crops_and_stays_on_8_bit_values():
    from longtail.data import randaugment as RA

    x = smooth_images(8, size=40, seed=7)
    aug = A.build_train_augment("imagenet_randaugment", MEAN, STD, 24)
    y = aug(x, torch.Generator().manual_seed(0))
    assert y.shape == (8, 3, 24, 24)
    # replay: boxes drawn over the 48x48 reflect-padded image (numpy's reflect), crops rounded to 8 bits
    g = torch.Generator().manual_seed(0)
    padded = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)), mode="reflect")).float()
    boxes = A.random_resized_crop_boxes(8, 48, 48, generator=g)
    flip = torch.rand(8, generator=g) < 0.5
    crops = A.resized_crop(padded, boxes, 24, flip).round().clamp(0, 255)
    # the jitter and RandAugment after the crop: tested against PIL on cropped batches above
    jittered = A._random_color_jitter(crops, g, 0.4, max_value=255.0, pil=True)
    want = RA.rand_augment(jittered, g, fill=aug.fill)
    assert torch.allclose(y, A.normalize(want, MEAN, STD), atol=1e-5)
    # the pad is there: boxes reaching into it see mirrored pixels, not the image's edge
    assert ((boxes[:, 0] < 4) | (boxes[:, 1] < 4) | (boxes[:, 0] + boxes[:, 2] > 44)
            | (boxes[:, 1] + boxes[:, 3] > 44)).any()
    pixels = denorm(y) * 255  # PIL-exact steps need 8-bit values after the crop, and keep them
    assert (pixels - pixels.round()).abs().max() < 1e-3 and pixels.min() > -1e-3 and pixels.max() < 255 + 1e-3
    with pytest.raises(ValueError, match="reflect-pads by 4 pixels"):
        aug(smooth_images(2, size=4), torch.Generator().manual_seed(0))


def test_bad_inputs_fail_with_clear_messages():
    with pytest.raises(ValueError, match="unknown augmentation"):
        A.build_train_augment("mixup", MEAN, STD, 32)
    with pytest.raises(ValueError, match="expects 32x32"):
        A.build_train_augment("crop_flip", MEAN, STD, 32)(smooth_images(2, size=16))
    with pytest.raises(ValueError, match="channels"):
        A.build_eval_transform(MEAN, STD)(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


def test_grayscale_digits_crop_flip_pad_derived_from_size():
    # 1x8x8 digits: pad = 8 // 8 = 1; every output must be a pad-1 crop (maybe mirrored) of its input.
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 17, (32, 1, 8, 8), generator=g).to(torch.uint8)
    y = A.build_train_augment("crop_flip", (0.5,), (0.25,), 8)(x, g)
    assert y.shape == (32, 1, 8, 8)
    raw = torch.round((y * 0.25 + 0.5) * 255).to(torch.uint8)
    seen = set()
    for i in range(32):
        p = np.pad(x[i, 0].numpy(), 1)
        cands = [(t, left, f) for t in range(3) for left in range(3) for f in (0, 1)
                 if np.array_equal(raw[i, 0].numpy(),
                                   p[t:t + 8, left:left + 8][:, ::-1] if f else p[t:t + 8, left:left + 8])]
        assert cands, f"image {i} is not a padded crop of its input"
        seen.update(cands)
    assert len(seen) > 6  # per-image choices, not one for the batch


# ------------------------------------------------------------------------------------ crop / flip

def test_crop_flip_matches_pad_and_slice():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (12, 3, 32, 32), generator=g).to(torch.uint8)
    offsets = torch.randint(0, 9, (12, 2), generator=g)
    offsets[0] = torch.tensor([0, 0])
    offsets[1] = torch.tensor([8, 8])
    flip = torch.arange(12) % 2 == 0
    y = A.crop_flip(x, 4, 32, offsets, flip)
    for i in range(12):
        p = np.pad(x[i].numpy(), ((0, 0), (4, 4), (4, 4)))
        t, left = offsets[i].tolist()
        ref = p[:, t:t + 32, left:left + 32]
        if flip[i]:
            ref = ref[:, :, ::-1]
        assert np.array_equal(y[i].numpy(), ref)
    # float input gives the same numbers
    assert torch.equal(A.crop_flip(x.float(), 4, 32, offsets, flip), y.float())


def test_random_crop_flip_is_per_image():
    x = smooth_images(1).expand(256, -1, -1, -1).contiguous()  # identical images
    y = A.random_crop_flip(x, 4, 32, torch.Generator().manual_seed(0))
    distinct = {tuple(y[i].flatten()[::37].tolist()) for i in range(256)}
    assert len(distinct) > 100
    p = np.pad(x[0].numpy(), ((0, 0), (4, 4), (4, 4)))
    offsets, flips = set(), set()
    for i in range(0, 256, 4):
        hits = [(t, left, f) for t in range(9) for left in range(9) for f in (0, 1)
                if np.array_equal(y[i].numpy(),
                                  p[:, t:t + 32, left:left + 32][:, :, ::-1] if f else p[:, t:t + 32, left:left + 32])]
        assert hits
        offsets.add(hits[0][:2])
        flips.add(hits[0][2])
    assert flips == {0, 1} and len(offsets) > 20


def test_hflip_exact():
    x = smooth_images(4)
    mask = torch.tensor([True, False, True, False])
    y = A.hflip(x, mask)
    for i in range(4):
        ref = x[i].numpy()[:, :, ::-1] if mask[i] else x[i].numpy()
        assert np.array_equal(y[i].numpy(), ref)


# ------------------------------------------------------------------------------------ cutout

def released_cutout(img, y, x, length=16):
    """uoguelph-mlrg/Cutout for one image (C, H, W), with the centre given."""
    h, w = img.shape[1:]
    mask = np.ones((h, w), np.float32)
    y1, y2 = np.clip(y - length // 2, 0, h), np.clip(y + length // 2, 0, h)
    x1, x2 = np.clip(x - length // 2, 0, w), np.clip(x + length // 2, 0, w)
    mask[y1:y2, x1:x2] = 0.0
    return img * mask[None]


def test_cutout_matches_released_code():
    x = torch.rand(6, 3, 32, 32) + 0.1  # strictly positive: zeros come from the hole only
    centres = torch.tensor([[16, 16], [0, 0], [31, 31], [3, 28], [20, 7], [8, 8]])
    y = A.cutout(x, centres, 16)
    for i in range(6):
        ref = released_cutout(x[i].numpy(), *centres[i].tolist())
        np.testing.assert_array_equal(y[i].numpy(), ref)
    assert (y[0] == 0).sum().item() == 3 * 16 * 16
    assert (y[1] == 0).sum().item() == 3 * 8 * 8


def test_random_cutout_per_image_and_zero_before_normalize():
    x = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    y = A.random_cutout(x, torch.Generator().manual_seed(0))
    holes = (y[:, 0] == 0)
    sizes = holes.flatten(1).sum(1)
    assert sizes.min() >= 64 and sizes.max() == 256  # clipped at borders, never smaller than 8x8
    assert len({tuple(h.nonzero()[0].tolist()) for h in holes}) > 20
    # In the GALA recipe the hole is 0 in [0,1] space, i.e. -mean/std after normalisation.
    out = A.build_train_augment("autoaugment", MEAN, STD, 32)(x, torch.Generator().manual_seed(0))
    hole_value = torch.tensor([-m / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)
    at_hole = torch.isclose(out, hole_value.expand_as(out), atol=1e-5).all(1)
    assert (at_hole.flatten(1).sum(1) >= 64).all()


# ------------------------------------------------------------------------------------ AutoAugment ops vs PIL

FILL = (128, 128, 128)


def _rotate_with_fill(img, magnitude):
    rot = img.convert("RGBA").rotate(magnitude)
    return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert(img.mode)


def nearest_shear(x, m, axis):
    """The nearest warp (`affine`) on a shear matrix: input x = x + m y (axis 0) or y = m x + y (axis 1)."""
    return AA.affine(x, AA._shear_matrix(torch.full((x.shape[0],), float(m), dtype=torch.float64), axis), 128.0)


# (name, our op, PIL reference) at fixed magnitudes/signs, as DeepVoltaire's SubPolicy applies them.
PIL_CASES = [
    ("translateX+", lambda x: AA.translate_x(x, 150 / 331 * 32), lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 150 / 331 * 32, 0, 1, 0), fillcolor=FILL)),
    ("translateX-", lambda x: AA.translate_x(x, -5.3), lambda im: im.transform(im.size, Image.AFFINE, (1, 0, -5.3, 0, 1, 0), fillcolor=FILL)),
    ("translateY", lambda x: AA.translate_y(x, -150 / 331 * 32 * 3 / 9), lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, -150 / 331 * 32 * 3 / 9), fillcolor=FILL)),
    # the policy's shears: PIL bicubic (DeepVoltaire), at several magnitudes and both signs
    *[(f"shear{ax}{m:+.4f}", (lambda m, ax: lambda x: (AA.shear_x if ax == "X" else AA.shear_y)(x, m))(m, ax),
       (lambda m, ax: lambda im: im.transform(im.size, Image.AFFINE, (1, m, 0, 0, 1, 0) if ax == "X" else
                                              (1, 0, 0, m, 1, 0), Image.BICUBIC, fillcolor=FILL))(m, ax))
      for ax in "XY" for m in (0.3, -0.3 * 8 / 9, 0.3 / 9, -0.1)],
    # PIL's nearest warp on a shear matrix (RandAugment's shears use it)
    ("shearX-nearest", lambda x: nearest_shear(x, 0.3, 0), lambda im: im.transform(im.size, Image.AFFINE, (1, 0.3, 0, 0, 1, 0), Image.NEAREST, fillcolor=FILL)),
    ("shearY-nearest", lambda x: nearest_shear(x, -0.3 * 8 / 9, 1), lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, -0.3 * 8 / 9, 1, 0), Image.NEAREST, fillcolor=FILL)),
    ("rotate", lambda x: AA.rotate(x, 30 * 2 / 9), lambda im: _rotate_with_fill(im, 30 * 2 / 9)),
    ("color-", lambda x: AA.color(x, 1 - 0.9 * 7 / 9), lambda im: ImageEnhance.Color(im).enhance(1 - 0.9 * 7 / 9)),
    ("color+", lambda x: AA.color(x, 1.9), lambda im: ImageEnhance.Color(im).enhance(1.9)),
    ("contrast-", lambda x: AA.contrast(x, 0.4), lambda im: ImageEnhance.Contrast(im).enhance(0.4)),
    ("contrast+", lambda x: AA.contrast(x, 1.7), lambda im: ImageEnhance.Contrast(im).enhance(1.7)),
    ("sharpness-", lambda x: AA.sharpness(x, 0.1), lambda im: ImageEnhance.Sharpness(im).enhance(0.1)),
    ("sharpness+", lambda x: AA.sharpness(x, 1.9), lambda im: ImageEnhance.Sharpness(im).enhance(1.9)),
    ("brightness-", lambda x: AA.brightness(x, 0.3), lambda im: ImageEnhance.Brightness(im).enhance(0.3)),
    ("brightness+", lambda x: AA.brightness(x, 1.8), lambda im: ImageEnhance.Brightness(im).enhance(1.8)),
    ("posterize4", lambda x: AA.posterize(x, 4), lambda im: ImageOps.posterize(im, 4)),
    ("posterize7", lambda x: AA.posterize(x, 7), lambda im: ImageOps.posterize(im, 7)),
    ("solarize", lambda x: AA.solarize(x, 256 * 7 / 9), lambda im: ImageOps.solarize(im, 256 * 7 / 9)),
    ("solarize128", lambda x: AA.solarize(x, 128), lambda im: ImageOps.solarize(im, 128)),
    ("autocontrast", AA.autocontrast, ImageOps.autocontrast),
    ("equalize", AA.equalize, ImageOps.equalize),
    ("invert", AA.invert, ImageOps.invert),
]


@pytest.mark.parametrize("name,ours,ref", PIL_CASES, ids=[c[0] for c in PIL_CASES])
def test_autoaugment_op_matches_pil(name, ours, ref):
    x = smooth_images(4, seed=7)
    expected = pil_apply(x, ref)
    got = ours(x)
    assert got.dtype == torch.uint8
    assert torch.equal(got, expected), f"{name}: {(got.int() - expected.int()).abs().max()} max diff"
    got_f = ours(x.float())
    assert got_f.dtype == torch.float32 and torch.equal(got_f, expected.float())


def _noise_images(n, h, w, seed):
    # every pixel differs from its neighbours: a source pixel one off shows (smooth images hide it)
    rng = np.random.RandomState(seed)
    return torch.from_numpy(rng.randint(0, 256, (n, h, w, 3)).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("h,w", [(32, 32), (48, 64), (224, 224), (17, 31)])
def test_nearest_warps_take_pils_source_pixel_on_noise_images(h, w):
    # PIL walks rotations and shears in 16.16 fixed point; the policy's own rotations (multiples of
    # 30/9 degrees) included, each output pixel must come from the pixel PIL takes.
    x = _noise_images(3, h, w, seed=h + w)
    angles = list(np.linspace(0, 30, 10)) + [-47.3, 90.0, 181.7, 400.0]
    for d in angles:
        expected = pil_apply(x, lambda im, d=d: _rotate_with_fill(im, float(d)))
        assert torch.equal(AA.rotate(x, float(d)), expected), f"rotate {d}"
        assert torch.equal(AA.rotate(x.float(), float(d)), expected.float()), f"rotate {d} (float)"
    for m in (0.3, -0.17, 0.03):
        for axis in (0, 1):
            coeffs = (1, m, 0, 0, 1, 0) if axis == 0 else (1, 0, 0, m, 1, 0)
            expected = pil_apply(x, lambda im, c=coeffs: im.transform(im.size, Image.AFFINE, c, Image.NEAREST,
                                                                       fillcolor=FILL))
            assert torch.equal(nearest_shear(x, m, axis), expected), f"shear {axis} {m}"
    assert AA.rotate(x[:0], 10.0).shape == (0, 3, h, w)  # an empty batch is returned as it is
    for t in (150 / 331 * w * 5 / 9, -7.25):
        expected = pil_apply(x, lambda im, t=t: im.transform(im.size, Image.AFFINE, (1, 0, t, 0, 1, 0), fillcolor=FILL))
        assert torch.equal(AA.translate_x(x, t), expected), f"translate {t}"


def test_simple_ops_against_formulas():
    x = smooth_images(3, seed=1).int()
    assert torch.equal(AA.invert(x.to(torch.uint8)).int(), 255 - x)
    assert torch.equal(AA.posterize(x.to(torch.uint8), 5).int(), x & 0b11111000)
    assert torch.equal(AA.solarize(x.to(torch.uint8), 100).int(), torch.where(x < 100, x, 255 - x))
    b = AA.brightness(x.to(torch.uint8), 0.5).int()
    assert torch.equal(b, torch.floor(x * 0.5).int())


def test_rotate_90_is_rot90_and_per_image_parameters():
    x = smooth_images(2)
    y = AA.rotate(x, torch.tensor([90.0, 0.0]))
    assert torch.equal(y[0], torch.rot90(x[0], 1, dims=(1, 2)))  # counter-clockwise, like PIL
    assert torch.equal(y[1], x[1])
    t = AA.translate_x(x, torch.tensor([3.0, -2.0]))
    assert torch.equal(t[0, :, :, :29], x[0, :, :, 3:]) and (t[0, :, :, 29:] == 128).all()
    assert torch.equal(t[1, :, :, 2:], x[1, :, :, :30]) and (t[1, :, :, :2] == 128).all()


def test_grayscale_ops_run():
    x = smooth_images(2)[:, :1]
    for f in (AA.color, AA.contrast, AA.sharpness):
        assert f(x, 1.5).shape == x.shape
    assert torch.equal(AA.color(x, 0.3), x)  # grey has no colour to remove


def test_policy_table_is_the_released_one():
    # Spot checks against DeepVoltaire's CIFAR10Policy listing (first, a middle and the last rows).
    assert len(AA.CIFAR10_POLICY) == 25
    assert AA.CIFAR10_POLICY[0] == (0.1, "invert", 7, 0.2, "contrast", 6)
    assert AA.CIFAR10_POLICY[12] == (0.4, "translateY", 3, 0.2, "sharpness", 6)
    assert AA.CIFAR10_POLICY[24] == (0.7, "translateY", 9, 0.9, "autocontrast", 1)
    np.testing.assert_allclose(AA.MAGNITUDES["posterize"], np.round(np.linspace(8, 4, 10)))
    np.testing.assert_allclose(AA.MAGNITUDES["translateX"], np.linspace(0, 150 / 331, 10))
    np.testing.assert_allclose(AA.MAGNITUDES["solarize"], np.linspace(256, 0, 10))


def test_autoaugment_batch_per_image_deterministic_integer():
    x = smooth_images(1).expand(128, -1, -1, -1).contiguous()
    y = AA.autoaugment_cifar10(x, torch.Generator().manual_seed(0))
    assert y.dtype == torch.uint8 and y.shape == x.shape
    outs = {y[i].numpy().tobytes() for i in range(128)}
    assert len(outs) > 30  # many different sub-policies / signs across identical inputs
    unchanged = sum(torch.equal(y[i], x[i]) for i in range(128))
    assert 5 < unchanged < 90  # some images get no op (both coin flips fail), most get one
    assert torch.equal(y, AA.autoaugment_cifar10(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(y, AA.autoaugment_cifar10(x, torch.Generator().manual_seed(1)))
    yf = AA.autoaugment_cifar10(x.float(), torch.Generator().manual_seed(0))
    assert torch.equal(yf, y.float())


def test_autoaugment_outputs_are_reachable_by_the_policy():
    # Every output must equal the PIL result of one (sub-policy, coin flips, signs) combination.
    x = smooth_images(1, seed=5)
    y = AA.autoaugment_cifar10(x.expand(32, -1, -1, -1).contiguous(), torch.Generator().manual_seed(4))
    funcs = {
        "shearX": lambda im, m, s: im.transform(im.size, Image.AFFINE, (1, m * s, 0, 0, 1, 0), Image.BICUBIC, fillcolor=FILL),
        "shearY": lambda im, m, s: im.transform(im.size, Image.AFFINE, (1, 0, 0, m * s, 1, 0), Image.BICUBIC, fillcolor=FILL),
        "translateX": lambda im, m, s: im.transform(im.size, Image.AFFINE, (1, 0, m * 32 * s, 0, 1, 0), fillcolor=FILL),
        "translateY": lambda im, m, s: im.transform(im.size, Image.AFFINE, (1, 0, 0, 0, 1, m * 32 * s), fillcolor=FILL),
        "rotate": lambda im, m, s: _rotate_with_fill(im, m),
        "color": lambda im, m, s: ImageEnhance.Color(im).enhance(1 + m * s),
        "posterize": lambda im, m, s: ImageOps.posterize(im, int(m)),
        "solarize": lambda im, m, s: ImageOps.solarize(im, m),
        "contrast": lambda im, m, s: ImageEnhance.Contrast(im).enhance(1 + m * s),
        "sharpness": lambda im, m, s: ImageEnhance.Sharpness(im).enhance(1 + m * s),
        "brightness": lambda im, m, s: ImageEnhance.Brightness(im).enhance(1 + m * s),
        "autocontrast": lambda im, m, s: ImageOps.autocontrast(im),
        "equalize": lambda im, m, s: ImageOps.equalize(im),
        "invert": lambda im, m, s: ImageOps.invert(im),
    }
    mag = {k: list(np.linspace(0, 0.3, 10)) for k in ("shearX", "shearY")}
    mag.update({"translateX": list(np.linspace(0, 150 / 331, 10)), "translateY": list(np.linspace(0, 150 / 331, 10)),
                "rotate": list(np.linspace(0, 30, 10)), "posterize": list(np.round(np.linspace(8, 4, 10))),
                "solarize": list(np.linspace(256, 0, 10))})
    im0 = Image.fromarray(x[0].permute(1, 2, 0).numpy())
    reachable = set()
    for p1, o1, m1, p2, o2, m2 in AA.CIFAR10_POLICY:
        v1 = mag.get(o1, list(np.linspace(0, 0.9, 10)))[m1]
        v2 = mag.get(o2, list(np.linspace(0, 0.9, 10)))[m2]
        firsts = [im0] + ([funcs[o1](im0, v1, s) for s in (-1, 1)] if p1 > 0 else [])
        for a in firsts:
            reachable.add(np.array(a).tobytes())
            if p2 > 0:
                for s in (-1, 1):
                    reachable.add(np.array(funcs[o2](a, v2, s)).tobytes())
    for i in range(32):
        assert y[i].permute(1, 2, 0).contiguous().numpy().tobytes() in reachable


# ------------------------------------------------------------------------------------ large-image recipe

def test_resized_crop_identity_and_flip():
    x = smooth_images(3).float()
    full = torch.tensor([[0.0, 0.0, 32.0, 32.0]] * 3)
    torch.testing.assert_close(A.resized_crop(x, full, 32), x, atol=1e-3, rtol=0)
    torch.testing.assert_close(A.resized_crop(x, full, 32, torch.tensor([True, False, True]))[0], x[0].flip(2),
                               atol=1e-3, rtol=0)
    # a 16x16 box at (8, 4) resized to 16x16 is exactly that slice
    box = torch.tensor([[8.0, 4.0, 16.0, 16.0]] * 3)
    torch.testing.assert_close(A.resized_crop(x, box, 16), x[:, :, 8:24, 4:20], atol=1e-3, rtol=0)


def test_random_resized_crop_boxes_follow_torchvision_rules():
    g = torch.Generator().manual_seed(0)
    boxes = A.random_resized_crop_boxes(2000, 40, 60, (0.08, 1.0), (3 / 4, 4 / 3), g, torch.device("cpu"))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 40).all() and (left + w <= 60).all()
    frac = h * w / (40 * 60)
    assert frac.min() > 0.05 and frac.max() <= 1.0
    ratio = w / h
    assert ratio.min() > 0.6 and ratio.max() < 1.6
    assert len(set(map(tuple, boxes.tolist()))) > 1500


def test_color_jitter_matches_per_image_formulas():
    x = torch.rand(4, 3, 8, 8)
    factors = torch.tensor([[1.3, 0.7, 1.2], [0.6, 1.4, 0.8], [1.0, 1.0, 1.0], [1.2, 1.1, 0.0]])
    order = torch.tensor([[0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1]])
    y = A.color_jitter(x, factors, order)
    for i in range(4):
        img = x[i].double().numpy()
        for op in order[i].tolist():
            f = factors[i, op].item()
            gray = 0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]
            if op == 0:
                img = img * f
            elif op == 1:
                img = gray.mean() + f * (img - gray.mean())
            else:
                img = gray[None] + f * (img - gray[None])
            img = np.clip(img, 0, 1)
        np.testing.assert_allclose(y[i].numpy(), img, atol=1e-5)

