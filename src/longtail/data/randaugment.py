"""Batched RandAugment (timm's early `rand-n2-m10-mstd0.5`), on image tensors, PIL-exact per operation.

Reference: the released GALA code trains its list datasets (ImageNet-LT, Places-LT, iNaturalist) with
``rand_augment_transform('rand-n2-m10-mstd0.5', dict(translate_const=int(224 * 0.45), img_mean=mean))``
from a ``randaugment.py`` it does not ship; the PaCo family of code bases carries the same file, an
early copy of Ross Wightman's timm ``auto_augment.py``. Its semantics, reproduced here:

- 15 operations (:data:`RAND_OPS`); per image, ``num_ops`` of them drawn uniformly with replacement,
  applied in order, each with probability 0.5;
- an applied operation draws its level as gauss(magnitude, magnitude_std) clipped to [0, 10];
  rotate, shears and translations negate their argument with probability 0.5 and resample with
  BILINEAR or BICUBIC (drawn per application), filling what they uncover with ``fill`` (the mean
  colour in the release);
- level -> argument, in double precision as Python computes it: rotate level/10*30 degrees
  (``Image.rotate``); shear level/10*0.3 (AFFINE (1, s, 0, 0, 1, 0) / (1, 0, 0, s, 1, 0));
  translate level/10*0.45 of the width / height, a fractional, filtered shift; posterize
  int(level/10*4) bits (0 bits: black, as the Pillow of the time did; Pillow 13 refuses 0 bits,
  but a level below 2.5 is 15 standard deviations away at m10 mstd0.5); solarize at int(level/10*256); solarize-add
  int(level/10*110) below 128; Color / Contrast / Brightness / Sharpness factor level/10*1.8 + 0.1;
  AutoContrast / Equalize / Invert without a level.

Given its drawn parameters every operation gives PIL's pixels exactly (uint8 ``Image`` in mode RGB or
L; tested against the installed Pillow, an x86-64 build: a build that fuses multiply-adds could round
PIL's interpolation differently now and then): the colour operations are those of
:mod:`longtail.data.autoaugment`, and :func:`affine_filtered` is PIL's generic filtered affine
transform (Geometry.c), gather-based and batched. One caveat, for rotations: PIL forms the rotation
matrix with the C library's cos and sin, this module with torch's, which differ in the last bit now
and then; after PIL's rounding to 15 decimals (reproduced exactly) about 1 angle in 7000 keeps a
1e-15 difference in one matrix entry, which moves sample points by ~1e-13 pixel (no pixel changed
where measured).

Images are (N, C, H, W) on the 0..255 scale, uint8 or integer-valued floating point; results come
back in the input dtype. Every random draw comes from an explicit ``torch.Generator`` on the
images' device. Two ways to apply a slot's operations, with identical results: grouped (default on
CPU: each operation once, on the images that drew it) or ``sync_free`` (default on accelerators:
every operation on the whole batch, each image keeping its own result; no host syncs).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real

import torch
from torch import Tensor

from .autoaugment import (
    _as_param,
    _bc,
    _float,
    _geometry_dtype,
    _restore,
    _shear_matrix,
    _translate_matrix,
    apply_by_group,
    autocontrast,
    brightness,
    color,
    contrast,
    equalize,
    identity_affine,
    invert,
    posterize,
    rotate_matrix,
    sharpness,
    solarize,
    sync_free_default,
)
from .device_constants import constant

__all__ = [
    "RAND_OPS", "GEOMETRIC_OPS", "MAX_LEVEL", "affine_filtered", "rotate_matrix", "solarize_add",
    "draw_rand_augment", "apply_rand_augment", "rand_augment",
]

# timm's _RAND_TRANSFORMS, in its order (op ids index this tuple).
RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeTpu", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
GEOMETRIC_OPS = frozenset(RAND_OPS.index(k) for k in ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"))
MAX_LEVEL = 10.0
_ROTATE, _SHEAR_X, _SHEAR_Y, _TRANSLATE_X, _TRANSLATE_Y = (RAND_OPS.index(k) for k in (
    "Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"))
_PARAM_KEYS = ("op", "applied", "level", "negate", "bicubic")
assert GEOMETRIC_OPS == {_ROTATE, *range(_SHEAR_X, _TRANSLATE_Y + 1)}


# ---------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------

def _check_images(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a tensor of images, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"expected a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point on the 0..255 scale, got {x.dtype}")


def _fill_tensor(fill, c: int, device: torch.device) -> Tensor:
    """Per-channel fill colour as a float32 (1, C, 1, 1) tensor; a scalar or 1-tuple fills every channel."""
    values = [fill] if isinstance(fill, Real) else list(fill)
    if len(values) == 1:
        values = values * c
    if len(values) != c:
        raise ValueError(f"fill has {len(values)} values but the images have {c} channels")
    if any(isinstance(v, bool) or not isinstance(v, Real) or not 0 <= v <= 255 for v in values):
        raise ValueError(f"fill values must be numbers in [0, 255], got {tuple(values)}")
    # made once per device: a blocking host-to-device copy on every call would synchronise a GPU
    return constant(tuple(float(v) for v in values), torch.float32, device).view(1, c, 1, 1)


def _check_policy(num_ops, magnitude, magnitude_std) -> None:
    if isinstance(num_ops, bool) or not isinstance(num_ops, int):
        raise TypeError(f"num_ops must be an int, got {num_ops!r}")
    if num_ops < 0:
        raise ValueError(f"num_ops must be >= 0, got {num_ops}")
    if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)):
        raise TypeError(f"magnitude must be a number, got {magnitude!r}")
    if not 0 <= magnitude <= MAX_LEVEL:
        raise ValueError(f"magnitude must be in [0, {MAX_LEVEL:g}], got {magnitude}")
    if isinstance(magnitude_std, bool) or not isinstance(magnitude_std, (int, float)):
        raise TypeError(f"magnitude_std must be a number, got {magnitude_std!r}")
    if not (magnitude_std >= 0 and math.isfinite(magnitude_std)):
        raise ValueError(f"magnitude_std must be finite and >= 0, got {magnitude_std}")


# ---------------------------------------------------------------------------------------------------
# PIL's filtered affine transform
# ---------------------------------------------------------------------------------------------------

def _sample(x: Tensor, k: Tensor, bicubic: bool, fill: Tensor) -> Tensor:
    """PIL's bilinear_filter / bicubic_filter at every output pixel of every image, filled outside.

    x (n, c, h, w), integer valued; k (n, 2, 3) inverse matrices; fill (1, c, 1, 1) float32.
    Returns float32 (n, c, h, w): the filtered values clipped and truncated as PIL's 8-bit filters
    do where the source point lies inside the image, the fill elsewhere.
    """
    n, c, h, w = x.shape
    dev, dt = x.device, k.dtype
    cols = torch.arange(w, device=dev, dtype=dt).view(1, 1, w) + 0.5
    rows = torch.arange(h, device=dev, dtype=dt).view(1, h, 1) + 0.5
    kk = k.view(n, 2, 3, 1, 1)
    # affine_transform: a0 * (x + 0.5) + a1 * (y + 0.5) + a2, evaluated left to right as C does
    sx = kk[:, 0, 0] * cols + kk[:, 0, 1] * rows + kk[:, 0, 2]
    sy = kk[:, 1, 0] * cols + kk[:, 1, 1] * rows + kk[:, 1, 2]
    inside = ((sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)).unsqueeze(1)
    sx, sy = sx - 0.5, sy - 0.5
    fx, fy = sx.floor(), sy.floor()
    dx, dy = (sx - fx).unsqueeze(1), (sy - fy).unsqueeze(1)
    # Points outside are filled anyway; clamping first keeps their integer conversion in range.
    ix, iy = fx.clamp(-2, w + 1).long(), fy.clamp(-2, h + 1).long()
    offsets = range(-1, 3) if bicubic else range(0, 2)
    taps = len(offsets)
    # PIL clamps each tap to the image (XCLIP/YCLIP; a row past the edge repeats the previous one,
    # which is the same as clamping it).
    xt = (ix.unsqueeze(1) + torch.arange(offsets[0], offsets[-1] + 1, device=dev).view(1, taps, 1, 1)).clamp_(0, w - 1)
    # Taps are gathered as float32 (integer valued, so exact; and gathers of float64 are 5x slower);
    # the interpolation promotes them to double where PIL computes in double.
    flat = _float(x).reshape(n, c, h * w)

    def row(r: int) -> Tensor:  # interpolate one tap row along x: (n, c, h, w)
        yr = (iy + r).clamp_(0, h - 1).unsqueeze(1)
        index = (yr * w + xt).view(n, 1, taps * h * w).expand(n, c, taps * h * w)
        v = flat.gather(2, index).view(n, c, taps, h, w).unbind(2)  # tap-major: each tap's slice is contiguous
        return _cubic(*v, dx) if bicubic else _linear(*v, dx)

    if bicubic:
        out = _cubic(*(row(r) for r in offsets), dy).clamp_(0, 255)  # v <= 0 -> 0, v >= 255 -> 255, else (UINT8) v
    else:
        out = _linear(*(row(r) for r in offsets), dy)  # (UINT8) v; v is within [0, 255]
    return torch.where(inside, out.floor_().float(), fill)


def _linear(a: Tensor, b: Tensor, d: Tensor) -> Tensor:
    # PIL's BILINEAR(v, a, b, d): v = a + (b - a) * d, in d's precision (a, b: the integer taps
    # (float32, exact) or the double row results)
    return ((b - a) * d).add_(a)


def _cubic(v1: Tensor, v2: Tensor, v3: Tensor, v4: Tensor, d: Tensor) -> Tensor:
    # PIL's BICUBIC macro (cubic convolution, a = -1): p1 = v2, p2 = -v1 + v3,
    # p3 = 2 (v1 - v2) + v3 - v4, p4 = -v1 + v2 - v3 + v4, v = p1 + d (p2 + d (p3 + d p4)),
    # each rounding as C evaluates it (left to right; a + b = b + a and -a + b = b - a exactly).
    # For the integer taps (float32) the p's are exact integers; the polynomial runs in d's precision.
    p2 = v3 - v1
    p3 = (v1 - v2).mul_(2).add_(v3).sub_(v4)
    p4 = (v2 - v1).sub_(v3).add_(v4)
    return (p4 * d).add_(p3).mul_(d).add_(p2).mul_(d).add_(v2)


# On CPU the filter runs over blocks of about this many values, so its float64 temporaries stay in
# cache (10x faster for 224 x 224 bicubic than one pass over a 64-image batch).
_CPU_BLOCK = 1 << 18


def _sample_blocks(x: Tensor, k: Tensor, bicubic: bool, fill: Tensor) -> Tensor:
    n = x.shape[0]
    per = max(1, _CPU_BLOCK // max(1, x[0].numel())) if x.device.type == "cpu" else n
    if per >= n:
        return _sample(x, k, bicubic, fill)
    return torch.cat([_sample(x[s:s + per], k[s:s + per], bicubic, fill) for s in range(0, n, per)])


def affine_filtered(x: Tensor, matrix: Tensor, fill, bicubic, sync_free: bool | None = None) -> Tensor:
    """Per-image PIL ``Image.transform(size, AFFINE, data, resample=BILINEAR or BICUBIC, fillcolor=fill)``.

    x: (N, C, H, W) uint8 or integer-valued float, 0..255. matrix: (N, 2, 3) (or (2, 3) for all)
    inverse maps in PIL's convention: output pixel (i, j) samples the input at
    (a0 (j + 0.5) + a1 (i + 0.5) + a2, a3 (j + 0.5) + a4 (i + 0.5) + a5), in double precision. A
    source point outside [0, W) x [0, H) leaves the fill; otherwise PIL's filter runs with its taps
    clamped to the image: BILINEAR 2 x 2 (truncated), BICUBIC 4 x 4 (a = -1; clipped and
    truncated), along x for each tap row, then along y. bicubic: a bool or an (N,) bool tensor.
    fill: a per-channel sequence (or one value). Returns the input dtype.

    Images are split by filter (one host read: ``sync_free=False``, the default on CPU) or both
    filters run on the whole batch and each image keeps its own (``sync_free=True``).
    """
    _check_images(x)
    n, c, h, w = x.shape
    fill_t = _fill_tensor(fill, c, x.device)
    dt = _geometry_dtype(x.device)
    k = torch.as_tensor(matrix, device=x.device).to(dt)
    if k.shape == (2, 3):
        k = k.expand(n, 2, 3)
    if k.shape != (n, 2, 3):
        raise ValueError(f"matrix must have shape ({n}, 2, 3) or (2, 3), got {tuple(k.shape)}")
    if isinstance(bicubic, bool):  # made on the device: no host-to-device copy
        cubic = torch.full((n,), bicubic, dtype=torch.bool, device=x.device)
    else:
        cubic = torch.as_tensor(bicubic, dtype=torch.bool, device=x.device)
    if cubic.dim() == 0:
        cubic = cubic.expand(n)
    if cubic.shape != (n,):
        raise ValueError(f"bicubic must be a bool or have shape ({n},), got {tuple(cubic.shape)}")
    if n == 0 or h == 0 or w == 0:
        return x.clone()
    if sync_free is None:
        sync_free = sync_free_default(x.device)

    def run(idx: Tensor | None, flag: bool) -> Tensor:
        xs, ks = (x, k) if idx is None else (x.index_select(0, idx), k.index_select(0, idx))
        return _sample_blocks(xs, ks, flag, fill_t)

    if sync_free:
        out = torch.where(cubic.view(n, 1, 1, 1), run(None, True), run(None, False))
    else:
        out = torch.empty(n, c, h, w, dtype=torch.float32, device=x.device)
        for flag in (False, True):
            idx = (cubic == flag).nonzero().squeeze(1)
            if idx.numel():
                out.index_copy_(0, idx, run(idx, flag))
    return _restore(out, x)


# ---------------------------------------------------------------------------------------------------
# Operations with their level arguments
# ---------------------------------------------------------------------------------------------------

def solarize_add(x: Tensor, add, threshold=128) -> Tensor:
    """timm's solarize_add: values below ``threshold`` get ``add`` added (capped at 255), via
    ``Image.point``. add / threshold: scalars or per-image 1-D tensors."""
    xf = _float(x)
    n = x.shape[0]
    a, t = _bc(_as_param(add, n, x)), _bc(_as_param(threshold, n, x))
    return _restore(torch.where(xf < t, (xf + a).clamp_(max=255), xf), x)


def _fraction(level: Tensor) -> Tensor:
    # level / _MAX_LEVEL as Python divides (a tensor divisor: CUDA turns a scalar one into a reciprocal)
    return level / torch.full_like(level, MAX_LEVEL)


def _geometric_matrices(op: Tensor, level: Tensor, negate: Tensor, h: int, w: int) -> Tensor:
    """(N, 2, 3) PIL inverse matrices for the geometric ops (identity for any other op id)."""
    dt = _geometry_dtype(op.device)
    f = _fraction(level.to(dt))
    sign = torch.where(negate, -1.0, 1.0).to(dt)  # negation is exact, so its order does not matter
    shear = f * 0.3 * sign
    pct = f * 0.45 * sign
    a = identity_affine(op.shape[0], op.device, dt)
    a = torch.where((op == _SHEAR_X).view(-1, 1, 1), _shear_matrix(shear, 0), a)
    a = torch.where((op == _SHEAR_Y).view(-1, 1, 1), _shear_matrix(shear, 1), a)
    a = torch.where((op == _TRANSLATE_X).view(-1, 1, 1), _translate_matrix(pct * w, 0), a)
    a = torch.where((op == _TRANSLATE_Y).view(-1, 1, 1), _translate_matrix(pct * h, 1), a)
    return torch.where((op == _ROTATE).view(-1, 1, 1), rotate_matrix(f * 30.0 * sign, h, w), a)


# Colour ops by how their level enters: none; an int(level / 10 * scale) argument (posterize's
# bits: 0..4, 0 keeping nothing, i.e. black); an enhance factor level / 10 * 1.8 + 0.1.
_NO_LEVEL = {"AutoContrast": autocontrast, "Equalize": equalize, "Invert": invert}
_INT_LEVEL = {"PosterizeTpu": (posterize, 4.0), "Solarize": (solarize, 256.0), "SolarizeAdd": (solarize_add, 110.0)}
_ENHANCE = {"Color": color, "Contrast": contrast, "Brightness": brightness, "Sharpness": sharpness}


def _apply_colour_op(g: int, xs: Tensor, level: Tensor) -> Tensor:
    """Colour op g on xs (float32 working images), each image with its own level (float64)."""
    name = RAND_OPS[g]
    if name in _NO_LEVEL:
        return _NO_LEVEL[name](xs)
    f = _fraction(level)
    if name in _INT_LEVEL:
        op, scale = _INT_LEVEL[name]
        return op(xs, torch.trunc(f * scale).float())
    return _ENHANCE[name](xs, (f * 1.8 + 0.1).float())  # PIL's blend takes the factor as a C float


_GEOMETRIC_GROUP = _ROTATE  # the five geometric ops share one affine_filtered call, under Rotate's id


def _apply_group(g: int, xs: Tensor, op: Tensor, level: Tensor, negate: Tensor, bicubic: Tensor, fill,
                 sync_free: bool) -> Tensor:
    if g == _GEOMETRIC_GROUP:
        h, w = xs.shape[-2:]
        return affine_filtered(xs, _geometric_matrices(op, level, negate, h, w), fill, bicubic, sync_free)
    return _apply_colour_op(g, xs, level)


# ---------------------------------------------------------------------------------------------------
# Draws and the policy
# ---------------------------------------------------------------------------------------------------

def draw_rand_augment(n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                      num_ops: int = 2, magnitude: float = 10.0, magnitude_std: float = 0.5) -> dict[str, Tensor]:
    """Per-image RandAugment draws, each (n, num_ops), from ``generator`` on ``device``:

    - "op": int64 ids into :data:`RAND_OPS`, uniform, with replacement;
    - "applied": bool, True with probability 0.5 (timm: skipped if random() > 0.5);
    - "level": gauss(magnitude, magnitude_std) clipped to [0, 10], float64 (float32 on MPS);
    - "negate": bool, probability 0.5 (used by rotate, shears, translations);
    - "bicubic": bool, probability 0.5 (else bilinear; used by the same geometric ops).
    Drawn for every slot whether it is used or not, so the stream does not depend on the outcome.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    _check_policy(num_ops, magnitude, magnitude_std)
    dev = torch.device(device)
    dt = _geometry_dtype(dev)
    shape = (n, num_ops)
    op = torch.randint(len(RAND_OPS), shape, generator=generator, device=dev)
    applied = torch.rand(shape, generator=generator, device=dev) <= 0.5
    noise = torch.randn(shape, generator=generator, device=dev, dtype=dt)
    level = (noise * float(magnitude_std) + float(magnitude)).clamp_(0.0, MAX_LEVEL)
    negate = torch.rand(shape, generator=generator, device=dev) > 0.5
    bicubic = torch.randint(2, shape, generator=generator, device=dev).bool()
    return {"op": op, "applied": applied, "level": level, "negate": negate, "bicubic": bicubic}


def _check_params(params: Mapping[str, Tensor], n: int, device: torch.device) -> dict[str, Tensor]:
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict of tensors (see draw_rand_augment), got {type(params).__name__}")
    missing = [k for k in _PARAM_KEYS if k not in params]
    if missing:
        raise ValueError(f"params lack {missing}; expected the keys {_PARAM_KEYS} (see draw_rand_augment)")
    out = {k: torch.as_tensor(params[k], device=device) for k in _PARAM_KEYS}
    shape = out["op"].shape
    if len(shape) != 2 or shape[0] != n:
        raise ValueError(f"params['op'] must have shape ({n}, num_ops) for {n} images, got {tuple(shape)}")
    for k in _PARAM_KEYS[1:]:
        if out[k].shape != shape:
            raise ValueError(f"params[{k!r}] has shape {tuple(out[k].shape)}, expected {tuple(shape)} as params['op']")
    if out["op"].is_floating_point() or out["op"].dtype == torch.bool:
        raise TypeError(f"params['op'] must be integer op ids, got {out['op'].dtype}")
    out["op"] = out["op"].long()
    for k in ("applied", "negate", "bicubic"):
        out[k] = out[k].bool()
    out["level"] = out["level"].to(_geometry_dtype(device))
    return out


def apply_rand_augment(x: Tensor, params: Mapping[str, Tensor], fill: Sequence[float] | float = (124, 116, 104),
                       sync_free: bool | None = None) -> Tensor:
    """Apply drawn RandAugment parameters (see :func:`draw_rand_augment`) slot by slot (slot 0, then 1, ...).

    x: (N, C, H, W) uint8 or integer-valued float on the 0..255 scale; returns the input dtype.
    fill: the geometric ops' fill colour, one value per channel (or one for all).
    Grouped (``sync_free=False``, the default on CPU): per slot, each operation once on just the
    images that drew it (the five geometric ops share one :func:`affine_filtered` call); finding the
    groups reads their sizes back to the host. ``sync_free=True`` (the default on accelerators):
    every operation on the whole batch, each image keeping its own op's result (torch.where), no
    host reads. Same result either way.
    """
    _check_images(x)
    n, c, h, w = x.shape
    _fill_tensor(fill, c, x.device)  # validate once, up front
    p = _check_params(params, n, x.device)
    if sync_free is None:
        sync_free = sync_free_default(x.device)
    out = _float(x).clone()
    if n == 0 or h == 0 or w == 0:
        return _restore(out, x) if x.dtype == torch.uint8 else out.to(x.dtype)
    colour_groups = [g for g in range(len(RAND_OPS)) if g not in GEOMETRIC_OPS]
    # Op ids are checked where the groups are read back anyway; sync-free, an unknown id applies nothing.
    if not sync_free and not ((p["op"] >= 0) & (p["op"] < len(RAND_OPS))).all():
        raise ValueError(f"params['op'] must hold op ids in [0, {len(RAND_OPS)})")
    for slot in range(p["op"].shape[1]):
        op, level = p["op"][:, slot], p["level"][:, slot]
        negate, bicubic = p["negate"][:, slot], p["bicubic"][:, slot]
        # group id per image: the op id, Rotate's id for all geometric ops, -1 when not applied
        geometric = (op == _ROTATE) | ((op >= _SHEAR_X) & (op <= _TRANSLATE_Y))  # ids 3 and 11-14
        key = torch.where(geometric, torch.full_like(op, _GEOMETRIC_GROUP), op)
        key = torch.where(p["applied"][:, slot], key, torch.full_like(op, -1))

        def run(g: int, xs: Tensor, idx: Tensor | None, op=op, level=level, negate=negate, bicubic=bicubic) -> Tensor:
            if idx is not None:
                op, level, negate, bicubic = (v.index_select(0, idx) for v in (op, level, negate, bicubic))
            return _apply_group(g, xs, op, level, negate, bicubic, fill, idx is None)
        out = apply_by_group(out, key, [_GEOMETRIC_GROUP] + colour_groups, run, sync_free)
    return _restore(out, x) if x.dtype == torch.uint8 else out.to(x.dtype)


def rand_augment(x: Tensor, generator: torch.Generator | None = None, fill: Sequence[float] | float = (124, 116, 104),
                 num_ops: int = 2, magnitude: float = 10.0, magnitude_std: float = 0.5,
                 sync_free: bool | None = None) -> Tensor:
    """timm ``rand_augment_transform('rand-n{num_ops}-m{magnitude}-mstd{magnitude_std}')`` on a batch:
    :func:`draw_rand_augment` on the images' device, then :func:`apply_rand_augment`.

    x: (N, C, H, W) uint8 or integer-valued float, 0..255; returns the input dtype. fill: the mean
    colour the geometric ops fill with (default: ImageNet's mean, (124, 116, 104)).
    """
    _check_images(x)
    _fill_tensor(fill, x.shape[1], x.device)
    params = draw_rand_augment(x.shape[0], generator, x.device, num_ops, magnitude, magnitude_std)
    return apply_rand_augment(x, params, fill, sync_free)
