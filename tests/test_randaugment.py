"""Batched RandAugment (timm's early rand-n2-m10-mstd0.5, the GALA release's list-dataset policy),
checked against PIL: the filtered affine kernel against Image.transform / Image.rotate, each of the 15
operations and the whole drawn policy against a PIL implementation of the reference randaugment.py
written here, and the draws against their distributions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch.utils._python_dispatch import TorchDispatchMode

from longtail.data import randaugment as RA

FILL = (200, 30, 90)  # not grey: a channel mix-up would show


@pytest.fixture(autouse=True)
def _one_thread():
    # These images are small: a second intra-op thread buys nothing, and on a busy machine each
    # parallel region waits for it to be scheduled (50x slower here with a training run alongside).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def noise_images(n, h, w, c=3, seed=0):
    """uint8 (n, c, h, w): half pure noise, half upsampled noise squeezed into a random range (so
    autocontrast, equalize, contrast and posterize have work to do)."""
    rng = np.random.RandomState(seed)
    out = []
    for i in range(n):
        if i % 2 == 0:
            a = rng.randint(0, 256, (h, w, c))
        else:
            small = rng.randint(0, 256, (4, 4, c)).astype(np.uint8)
            up = np.array(Image.fromarray(small[..., 0] if c == 1 else small).resize((w, h), Image.BILINEAR))
            lo, hi = sorted(rng.randint(0, 256, 2))
            a = (lo + up.reshape(h, w, c).astype(np.float64) * (hi - lo) / 255).astype(np.int64)
        out.append(a.astype(np.uint8))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def to_pil(img):
    a = img.permute(1, 2, 0).numpy()
    return Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)


def from_pil(im):
    a = np.array(im)
    return torch.from_numpy(a[..., None] if a.ndim == 2 else a).permute(2, 0, 1)


def pil_fill(img, fill):
    return fill[0] if img.mode == "L" else tuple(fill)


# ----------------------------------------------------------- reference: the timm ops, in PIL

def pil_op(img, name, level, negate, bicubic, fill):
    """One operation of the reference randaugment.py on a PIL image, from its drawn parameters."""
    f = level / 10.0  # level / _MAX_LEVEL
    resample = Image.BICUBIC if bicubic else Image.BILINEAR
    kw = dict(resample=resample, fillcolor=pil_fill(img, fill))
    sign = -1 if negate else 1
    if name == "Rotate":
        return img.rotate(sign * (f * 30.0), **kw)
    if name in ("ShearX", "ShearY"):
        s = sign * (f * 0.3)
        data = (1, s, 0, 0, 1, 0) if name == "ShearX" else (1, 0, 0, s, 1, 0)
        return img.transform(img.size, Image.AFFINE, data, **kw)
    if name in ("TranslateXRel", "TranslateYRel"):
        pct = sign * (f * 0.45)
        data = (1, 0, pct * img.size[0], 0, 1, 0) if name == "TranslateXRel" else (1, 0, 0, 0, 1, pct * img.size[1])
        return img.transform(img.size, Image.AFFINE, data, **kw)
    if name == "PosterizeTpu":
        bits = int(f * 4)
        if bits >= 8:
            return img
        try:
            return ImageOps.posterize(img, bits)
        except ValueError:  # Pillow >= 11 rejects 0 bits; older Pillow (the release's) gave black: mask ~255
            return img.point([i & ~(2 ** (8 - bits) - 1) for i in range(256)] * len(img.getbands()))
    if name == "Solarize":
        return ImageOps.solarize(img, int(f * 256))
    if name == "SolarizeAdd":
        add = int(f * 110)
        lut = [min(255, i + add) if i < 128 else i for i in range(256)]
        return img.point(lut * len(img.getbands()))
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return getattr(ImageEnhance, name)(img).enhance(f * 1.8 + 0.1)
    return {"AutoContrast": ImageOps.autocontrast, "Equalize": ImageOps.equalize, "Invert": ImageOps.invert}[name](img)


def pil_replay(x, params, fill):
    """The drawn params applied per image, slot by slot, with the PIL reference."""
    out = []
    p = {k: v.tolist() for k, v in params.items()}
    for i in range(x.shape[0]):
        img = to_pil(x[i])
        for s in range(len(p["op"][i])):
            if p["applied"][i][s]:
                img = pil_op(img, RA.RAND_OPS[p["op"][i][s]], p["level"][i][s], p["negate"][i][s],
                             p["bicubic"][i][s], fill)
        out.append(from_pil(img))
    return torch.stack(out)


def assert_same(ours, ref, what=""):
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    bad = (ours != ref).any(1).nonzero()
    assert bad.numel() == 0, f"{what}: {bad.shape[0]} pixels differ, first (image, y, x) {bad[:5].tolist()}"


# ----------------------------------------------------------- 1. the filtered affine kernel

def _pil_transform_cases(h, w):
    """(PIL call, our (2, 3) matrix) pairs: rotations via Image.rotate, shears, translations, a general map."""
    cases = []
    for deg in (0.7, -4.25, 13.0, -22.5, 29.99, -30.0):
        m = RA.rotate_matrix(torch.tensor([deg], dtype=torch.float64), h, w)[0]
        cases.append((lambda im, kw, d=deg: im.rotate(d, **kw), m))
    datas = [(1, 0.3, 0, 0, 1, 0), (1, -0.17, 0, 0, 1, 0), (1, 0, 0, 0.3, 1, 0), (1, 0, 0, -0.23, 1, 0),
             (1, 0, 0.45 * w, 0, 1, 0), (1, 0, -0.3125 * w, 0, 1, 0), (1, 0, 0, 0, 1, 0.41 * h),
             (1, 0, 0, 0, 1, -0.07 * h), (0.93, 0.21, -1.7, -0.18, 1.12, 2.35),
             (1, 0, 2.5, 0, 1, -1.5)]  # source points exactly on the right / top border: x = W is outside, y = 0 inside
    for d in datas:
        cases.append((lambda im, kw, d=d: im.transform(im.size, Image.AFFINE, d, **kw),
                      torch.tensor(d, dtype=torch.float64).view(2, 3)))
    return cases


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_affine_filtered_matches_pil_transform_and_rotate(mode):
    c = 3 if mode == "RGB" else 1
    h, w = 17, 23
    cases = _pil_transform_cases(h, w)
    n = 2 * len(cases)  # every case with both filters, in one batch with per-image matrix and filter
    x = noise_images(n, h, w, c, seed=1)
    matrix = torch.stack([m for _, m in cases] * 2)
    bicubic = torch.tensor([False] * len(cases) + [True] * len(cases))
    fill = FILL[:c]
    ref = []
    for i in range(n):
        call = cases[i % len(cases)][0]
        kw = dict(resample=Image.BICUBIC if bicubic[i] else Image.BILINEAR, fillcolor=pil_fill(to_pil(x[i]), fill))
        ref.append(from_pil(call(to_pil(x[i]), kw)))
    ref = torch.stack(ref)
    ours = RA.affine_filtered(x, matrix, fill, bicubic, sync_free=False)
    assert_same(ours, ref, mode)
    assert_same(RA.affine_filtered(x, matrix, fill, bicubic, sync_free=True), ref, mode + " sync-free")
    f = RA.affine_filtered(x.float(), matrix, fill, bicubic)  # float in, float out, same numbers
    assert f.dtype == torch.float32 and torch.equal(f, ref.float())
    # the fill shows where PIL leaves it, and only there: the rotations uncover corners
    assert (ours[:6] == torch.tensor(fill, dtype=torch.uint8).view(1, c, 1, 1)).all(1).any()


def test_affine_filtered_rotations_224():
    # large images: coordinates up to ~300 stress the double-precision map and PIL's rotation matrix
    x = noise_images(4, 224, 224, seed=2)
    deg = torch.tensor([17.123456789, -29.5, 3.0000001, -11.1], dtype=torch.float64)
    bicubic = torch.tensor([False, True, True, False])
    ours = RA.affine_filtered(x, RA.rotate_matrix(deg, 224, 224), FILL, bicubic)
    ref = torch.stack([from_pil(to_pil(x[i]).rotate(deg[i].item(), resample=Image.BICUBIC if bicubic[i] else
                                                    Image.BILINEAR, fillcolor=FILL)) for i in range(4)])
    assert_same(ours, ref, "224x224 rotations")


def test_rotate_matrix_is_pils():
    # PIL forms the matrix in Python: angle % 360, -radians, cos/sin rounded to 15 decimals, centre terms
    h, w = 17, 23
    rng = np.random.RandomState(3)
    deg = np.concatenate([rng.uniform(-30, 30, 2000), [0.0, -0.0, 30.0, -30.0, 15.0, 1e-9]])
    ours = RA.rotate_matrix(torch.tensor(deg, dtype=torch.float64), h, w).view(-1, 6).tolist()
    differ = 0
    for d, m in zip(deg.tolist(), ours):
        a = -math.radians(d % 360.0)
        ref = [round(math.cos(a), 15), round(math.sin(a), 15), 0.0, round(-math.sin(a), 15), round(math.cos(a), 15), 0.0]
        ref[2], ref[5] = ref[0] * -(w / 2) + ref[1] * -(h / 2) + ref[2], ref[3] * -(w / 2) + ref[4] * -(h / 2) + ref[5]
        ref[2] += w / 2
        ref[5] += h / 2
        if m != ref:
            differ += 1
            assert max(abs(p - q) for p, q in zip(m, ref)) < 1e-13
    # torch's cos/sin differ from the C library's in the last bit now and then; after the exact
    # rounding to 15 decimals ~1 angle in 7000 keeps a difference (torch.round(.., 15): ~1 in 12)
    assert differ <= 3


# ----------------------------------------------------------- 2. every operation at several levels

# posterize bits 0, 0, 2, 2, 3, 3, 4; solarize 0 .. 256; rotate 0 .. 30 degrees. 56/11: level / 10 * 110 is
# 55.99999999999999, so int() gives 55 (as Python computes it; exact arithmetic would give 56)
LEVELS = (0.0, 2.4, 5.0, 56 / 11, 7.5, 9.37, 10.0)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_every_op_matches_pil(mode):
    c = 3 if mode == "RGB" else 1
    rows = []  # (op, level, negate, bicubic)
    for op, name in enumerate(RA.RAND_OPS):
        for level in LEVELS:
            if op in RA.GEOMETRIC_OPS:
                rows += [(op, level, neg, bic) for neg in (False, True) for bic in (False, True)]
            else:
                rows.append((op, level, False, False))
    n = len(rows)
    x = noise_images(n, 17, 23, c, seed=4)
    gen = torch.Generator().manual_seed(0)
    other = torch.randint(len(RA.RAND_OPS), (n,), generator=gen)  # a drawn op the slot must not apply
    first = torch.arange(n) % 2 == 0  # the applied op sits in slot 0 for half the images, slot 1 for the rest
    op = torch.tensor([r[0] for r in rows])
    params = {
        "op": torch.stack([torch.where(first, op, other), torch.where(first, other, op)], 1),
        "applied": torch.stack([first, ~first], 1),
        "level": torch.tensor([r[1] for r in rows], dtype=torch.float64).view(n, 1).expand(n, 2).clone(),
        "negate": torch.tensor([r[2] for r in rows]).view(n, 1).expand(n, 2).clone(),
        "bicubic": torch.tensor([r[3] for r in rows]).view(n, 1).expand(n, 2).clone(),
    }
    fill = FILL[:c]
    ref = torch.stack([from_pil(pil_op(to_pil(x[i]), RA.RAND_OPS[r[0]], r[1], r[2], r[3], fill))
                       for i, r in enumerate(rows)])
    ours = RA.apply_rand_augment(x, params, fill, sync_free=False)
    for i, r in enumerate(rows):
        assert torch.equal(ours[i], ref[i]), f"{RA.RAND_OPS[r[0]]} level {r[1]} negate {r[2]} bicubic {r[3]} ({mode})"
    assert torch.equal(RA.apply_rand_augment(x.float(), params, fill, sync_free=False), ref.float())
    assert torch.equal(RA.apply_rand_augment(x, params, fill, sync_free=True), ref)
    changed = (ours != x).flatten(1).any(1)
    assert changed.float().mean() > 0.6  # the ops do something (level 0 and SolarizeAdd/Color on L do not)


# ----------------------------------------------------------- 3. the whole policy

@pytest.mark.parametrize("magnitude,magnitude_std", [(10.0, 0.5), (6.0, 3.0)])
def test_whole_policy_matches_pil_replay(magnitude, magnitude_std):
    x = noise_images(40, 24, 24, seed=5)
    out = RA.rand_augment(x, torch.Generator().manual_seed(7), FILL, 2, magnitude, magnitude_std, sync_free=False)
    params = RA.draw_rand_augment(40, torch.Generator().manual_seed(7), "cpu", 2, magnitude, magnitude_std)
    assert params["applied"].any(1).float().mean() > 0.5 and params["applied"].all(1).any()
    assert_same(out, pil_replay(x, params, FILL), "rand_augment")
    synced = RA.rand_augment(x, torch.Generator().manual_seed(7), FILL, 2, magnitude, magnitude_std, sync_free=True)
    assert torch.equal(synced, out)
    f = RA.rand_augment(x.float(), torch.Generator().manual_seed(7), FILL, 2, magnitude, magnitude_std)
    assert f.dtype == torch.float32 and torch.equal(f, out.float())


def test_more_slots_apply_in_order():
    x = noise_images(12, 17, 23, seed=6)
    params = RA.draw_rand_augment(12, torch.Generator().manual_seed(3), num_ops=4, magnitude=8.0, magnitude_std=2.0)
    params["applied"][:] = True
    assert_same(RA.apply_rand_augment(x, params, FILL), pil_replay(x, params, FILL), "four slots")
    empty = RA.draw_rand_augment(12, torch.Generator().manual_seed(3), num_ops=0)
    assert empty["op"].shape == (12, 0) and torch.equal(RA.apply_rand_augment(x, empty, FILL), x)


class _SyncingOps(TorchDispatchMode):
    """Records operators that force a device-to-host read on an accelerator."""

    SYNCING = ("aten._local_scalar_dense", "aten.nonzero", "aten.bincount", "aten.unique", "aten.is_nonzero",
               "aten.equal", "aten.masked_select")

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket).startswith(self.SYNCING):
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_sync_free_reads_nothing_back(monkeypatch):
    x = noise_images(6, 16, 16, seed=8)
    seen = []
    for name in ("tolist", "cpu", "numpy", "item"):
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda t, *a, _n=name, _r=real, **k: seen.append(_n) or _r(t, *a, **k))
    with _SyncingOps() as mode:
        RA.rand_augment(x, torch.Generator().manual_seed(0), FILL, sync_free=True)
    assert mode.seen == [] and seen == []
    with _SyncingOps() as mode:  # while the grouped path does read back (so the check can fail)
        RA.rand_augment(x, torch.Generator().manual_seed(0), FILL, sync_free=False)
    assert mode.seen or seen


# ----------------------------------------------------------- 4. the draws

def test_draw_distributions():
    n = 200_000
    p = RA.draw_rand_augment(n, torch.Generator().manual_seed(11))
    assert set(p) == {"op", "applied", "level", "negate", "bicubic"}
    assert all(v.shape == (n, 2) for v in p.values())
    assert p["level"].dtype == torch.float64 and p["op"].dtype == torch.int64
    freq = torch.bincount(p["op"].flatten(), minlength=15).double() / (2 * n)
    assert freq.numel() == 15 and (freq - 1 / 15).abs().max() < 0.0025  # sd 0.0004
    for k in ("applied", "negate", "bicubic"):
        assert abs(p[k].double().mean().item() - 0.5) < 0.005, k  # sd 0.0008
    level = p["level"]
    assert level.min() >= 0 and level.max() <= 10
    at_max = (level == 10).double().mean().item()
    assert abs(at_max - 0.5) < 0.005  # gauss(10, 0.5) clipped: half the draws land on 10
    below = level[level < 10]
    # the unclipped half is a normal's lower half: mean 10 - 0.5 sqrt(2/pi), sd 0.5 sqrt(1 - 2/pi)
    assert abs(below.mean().item() - (10 - 0.5 * math.sqrt(2 / math.pi))) < 0.003
    assert abs(below.std().item() - 0.5 * math.sqrt(1 - 2 / math.pi)) < 0.003
    # the slots draw independently
    assert (p["op"][:, 0] == p["op"][:, 1]).double().mean().item() == pytest.approx(1 / 15, abs=0.003)


def test_draws_clip_at_both_ends_and_reproduce():
    p = RA.draw_rand_augment(100_000, torch.Generator().manual_seed(1), magnitude=5.0, magnitude_std=3.0)["level"]
    tail = 0.5 * math.erfc(5 / 3 / math.sqrt(2))  # P(N(5, 3) < 0) = P(> 10) = 0.048
    assert abs((p == 0).double().mean().item() - tail) < 0.004 and abs((p == 10).double().mean().item() - tail) < 0.004
    fixed = RA.draw_rand_augment(1000, torch.Generator().manual_seed(1), magnitude=7.0, magnitude_std=0.0)["level"]
    assert (fixed == 7.0).all()
    a = RA.draw_rand_augment(64, torch.Generator().manual_seed(5))
    b = RA.draw_rand_augment(64, torch.Generator().manual_seed(5))
    c = RA.draw_rand_augment(64, torch.Generator().manual_seed(6))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["level"], c["level"]) and not torch.equal(a["op"], c["op"])
    x = noise_images(8, 16, 16)
    assert torch.equal(RA.rand_augment(x, torch.Generator().manual_seed(2)), RA.rand_augment(x, torch.Generator().manual_seed(2)))


# ----------------------------------------------------------- 5. bad inputs

def test_bad_inputs_raise_clear_errors():
    x = noise_images(2, 8, 8)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="num_ops must be >= 0"):
        RA.rand_augment(x, gen, num_ops=-1)
    with pytest.raises(TypeError, match="num_ops must be an int"):
        RA.rand_augment(x, gen, num_ops=2.0)
    with pytest.raises(ValueError, match=r"magnitude must be in \[0, 10\]"):
        RA.rand_augment(x, gen, magnitude=10.5)
    with pytest.raises(ValueError, match="magnitude_std must be finite and >= 0"):
        RA.rand_augment(x, gen, magnitude_std=-0.1)
    with pytest.raises(ValueError, match="fill has 2 values but the images have 3 channels"):
        RA.rand_augment(x, gen, fill=(1, 2))
    with pytest.raises(ValueError, match=r"fill values must be numbers in \[0, 255\]"):
        RA.rand_augment(x, gen, fill=(1, 2, 300))
    with pytest.raises(ValueError, match=r"expected a batch of images \(N, C, H, W\)"):
        RA.rand_augment(x[0], gen)
    with pytest.raises(TypeError, match="uint8 or floating point"):
        RA.rand_augment(x.int(), gen)
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        RA.draw_rand_augment(-3)
    params = RA.draw_rand_augment(2, gen)
    with pytest.raises(ValueError, match="params lack"):
        RA.apply_rand_augment(x, {k: v for k, v in params.items() if k != "level"})
    with pytest.raises(ValueError, match=r"must have shape \(3, num_ops\)"):
        RA.apply_rand_augment(noise_images(3, 8, 8), params)
    with pytest.raises(ValueError, match=r"params\['negate'\] has shape"):
        RA.apply_rand_augment(x, {**params, "negate": params["negate"][:, :1]})
    with pytest.raises(ValueError, match="op ids in"):
        RA.apply_rand_augment(x, {**params, "op": params["op"] + 15, "applied": torch.ones(2, 2, dtype=torch.bool)},
                              sync_free=False)
    with pytest.raises(ValueError, match=r"matrix must have shape \(2, 2, 3\)"):
        RA.affine_filtered(x, torch.eye(3, dtype=torch.float64), FILL, True)
    with pytest.raises(ValueError, match="bicubic must be a bool or have shape"):
        RA.affine_filtered(x, torch.eye(2, 3, dtype=torch.float64), FILL, torch.tensor([True, False, True]))
