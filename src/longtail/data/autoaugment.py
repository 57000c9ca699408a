"""Batched AutoAugment (CIFAR-10 policy) and its 14 operations, on image tensors.

Reference: the DeepVoltaire `CIFAR10Policy` (PIL) that the released GALA code uses. A sub-policy is
drawn per image; each of its two operations is applied with its probability and magnitude; signed
operations draw their sign per image. Images are grouped by operation and every operation runs once
per group as a batched tensor call (or, on a GPU, on the whole batch with each image keeping its
own result: no host syncs), on whatever device the batch lives on.

Every operation takes images on the 0..255 scale, shape (N, C, H, W), uint8 or floating point, and
returns the input dtype. Results are quantised as PIL quantises them (integer valued), so uint8 and
float inputs give the same numbers. Per-image parameters are 1-D tensors of length N (or scalars).
Every operation reproduces PIL's numbers exactly, the policy's bicubic shear included.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .device_constants import on_device

__all__ = [
    "OPS", "CIFAR10_POLICY", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "rotate_matrix", "affine",
    "color", "posterize", "solarize", "contrast", "sharpness", "brightness", "autocontrast",
    "equalize", "invert", "autoaugment_cifar10",
]

OPS = ("shearX", "shearY", "translateX", "translateY", "rotate", "color", "posterize", "solarize",
       "contrast", "sharpness", "brightness", "autocontrast", "equalize", "invert")

# (p1, op1, magnitude index 1, p2, op2, magnitude index 2): the 25 sub-policies of CIFAR10Policy.
CIFAR10_POLICY = (
    (0.1, "invert", 7, 0.2, "contrast", 6),
    (0.7, "rotate", 2, 0.3, "translateX", 9),
    (0.8, "sharpness", 1, 0.9, "sharpness", 3),
    (0.5, "shearY", 8, 0.7, "translateY", 9),
    (0.5, "autocontrast", 8, 0.9, "equalize", 2),
    (0.2, "shearY", 7, 0.3, "posterize", 7),
    (0.4, "color", 3, 0.6, "brightness", 7),
    (0.3, "sharpness", 9, 0.7, "brightness", 9),
    (0.6, "equalize", 5, 0.5, "equalize", 1),
    (0.6, "contrast", 7, 0.6, "sharpness", 5),
    (0.7, "color", 7, 0.5, "translateX", 8),
    (0.3, "equalize", 7, 0.4, "autocontrast", 8),
    (0.4, "translateY", 3, 0.2, "sharpness", 6),
    (0.9, "brightness", 6, 0.2, "color", 8),
    (0.5, "solarize", 2, 0.0, "invert", 3),
    (0.2, "equalize", 0, 0.6, "autocontrast", 0),
    (0.2, "equalize", 8, 0.8, "equalize", 4),
    (0.9, "color", 9, 0.6, "equalize", 6),
    (0.8, "autocontrast", 4, 0.2, "solarize", 8),
    (0.1, "brightness", 3, 0.7, "color", 0),
    (0.4, "solarize", 5, 0.9, "autocontrast", 3),
    (0.9, "translateY", 9, 0.7, "translateY", 9),
    (0.9, "autocontrast", 2, 0.8, "solarize", 3),
    (0.8, "equalize", 8, 0.1, "invert", 3),
    (0.7, "translateY", 9, 0.9, "autocontrast", 1),
)


def _linspace(a: float, b: float) -> list[float]:
    # numpy's own values, so magnitudes agree with the reference to the last bit
    return np.linspace(a, b, 10).tolist()


# Magnitude ranges of SubPolicy (index 0..9). Translations are fractions of the image size.
MAGNITUDES = {
    "shearX": _linspace(0, 0.3), "shearY": _linspace(0, 0.3),
    "translateX": _linspace(0, 150 / 331), "translateY": _linspace(0, 150 / 331),
    "rotate": _linspace(0, 30), "color": _linspace(0, 0.9),
    "posterize": np.round(np.linspace(8, 4, 10)).tolist(),  # 8 8 7 7 6 6 5 5 4 4
    "solarize": _linspace(256, 0), "contrast": _linspace(0, 0.9), "sharpness": _linspace(0, 0.9),
    "brightness": _linspace(0, 0.9),
    "autocontrast": [0.0] * 10, "equalize": [0.0] * 10, "invert": [0.0] * 10,
}


def _as_param(v, n: int, x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    if isinstance(v, (int, float)):  # filled on the device: no host-to-device copy
        return torch.full((n,), v, dtype=dtype, device=x.device)
    t = torch.as_tensor(v, dtype=dtype, device=x.device)
    return t.expand(n) if t.dim() == 0 else t


def _as_geometry_param(v, n: int, x: Tensor) -> Tensor:
    return _as_param(v, n, x, _geometry_dtype(x.device))


def _restore(out: Tensor, like: Tensor) -> Tensor:
    """Clamp to 0..255 and return in the dtype of `like` (values are already integral)."""
    out = out.clamp_(0, 255)
    return out.to(torch.uint8) if like.dtype == torch.uint8 else out.to(like.dtype)


def _float(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float32 else x.float()


def _bc(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


# ---------------------------------------------------------------------------------------------------
# Geometric operations (PIL `Image.transform(AFFINE)` semantics: nearest sampling, and the bicubic
# sampling the policy's shears use)
# ---------------------------------------------------------------------------------------------------

def sync_free_default(device: torch.device | str) -> bool:
    """Per-image random ops apply sync-free (every op on the whole batch) on accelerators, where
    arithmetic is cheap and a host sync stalls the queue; grouped on the CPU, where work is dear."""
    return torch.device(device).type != "cpu"


def _geometry_dtype(device: torch.device) -> torch.dtype:
    # PIL computes source coordinates in double precision; float32 (MPS has no float64) moves a
    # coordinate across a pixel border now and then.
    return torch.float32 if device.type == "mps" else torch.float64


def _fixed_16_16(v: Tensor) -> Tensor:
    # PIL's FIX(v): floor(v * 65536 + 0.5), a 16.16 fixed-point number
    return torch.floor(v * 65536.0 + 0.5).long()


def affine(x: Tensor, matrix: Tensor, fill: float = 128.0) -> Tensor:
    """Per-image affine warp with PIL's nearest filter, pixel for pixel. `matrix` (N, 2, 3) maps an
    OUTPUT pixel coordinate to the INPUT one in PIL's convention (continuous coordinates, pixel
    (i, j) covers [j, j+1) x [i, i+1), origin at the top-left corner); outside the image the value
    is `fill`. The source pixel of output pixel (i, j) is floor of the map at its centre
    (j + 0.5, i + 0.5). A matrix with a rotation or shear part is computed as PIL computes it, in
    16.16 fixed point (whose rounding of the matrix moves the source pixel now and then from the
    exact one), unless a corner maps beyond 32768 pixels, where PIL too falls back to double
    precision. A pure scale or translation is computed in double precision from each centre; PIL
    adds the step pixel by pixel instead, which gives the same pixels for translations (a step of
    1.0, tested) but can cross a pixel border differently for other scales (not used here)."""
    n, c, h, w = x.shape
    if n == 0:
        return x.clone()
    dt = _geometry_dtype(x.device)
    k = matrix.to(device=x.device, dtype=dt).reshape(n, 2, 3, 1, 1)  # row r maps to the source's x (0) or y (1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    rows = torch.arange(h, device=x.device).view(1, h, 1)

    def exact(r: int) -> Tensor:  # double precision from each pixel centre
        return torch.floor(k[:, r, 0] * (cols + 0.5) + k[:, r, 1] * (rows + 0.5) + k[:, r, 2]).long()

    def walked(r: int) -> Tensor:  # PIL's 16.16 fixed-point walk from the first pixel's centre
        start = _fixed_16_16(k[:, r, 2] + k[:, r, 0] * 0.5 + k[:, r, 1] * 0.5)
        return (start + rows * _fixed_16_16(k[:, r, 1]) + cols * _fixed_16_16(k[:, r, 0])) >> 16  # shift: floor

    # PIL's ImagingTransformAffine walks in fixed point a matrix with a rotation or shear part whose
    # four corners map within +-32768
    # the corners (0, 0), (w, h), (0, h), (w, 0), made on the device (no host-to-device copy)
    corner = torch.arange(4, device=x.device)
    corner_x = (corner % 2).to(dt) * w
    corner_y = ((corner + 1) // 2 % 2).to(dt) * h
    mapped = k[:, :, 0, 0] * corner_x + k[:, :, 1, 0] * corner_y + k[:, :, 2, 0]  # (N, 2, 4)
    fixed = ((k[:, 0, 1] != 0) | (k[:, 1, 0] != 0)) & (mapped.abs() < 32768.0).flatten(1).all(1).view(n, 1, 1)
    src_x = torch.where(fixed, walked(0), exact(0))  # (N, H, W)
    src_y = torch.where(fixed, walked(1), exact(1))
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    index = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
    out = x.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    return torch.where(inside.unsqueeze(1), out, torch.full_like(out, fill))


def identity_affine(n: int, device, dtype) -> Tensor:
    """(n, 2, 3) identity matrices, made on the device: `a[:, 0, 0] = 1` would copy the Python 1 from
    the host there, and that copy makes a GPU wait."""
    return torch.eye(2, 3, device=device, dtype=dtype).expand(n, 2, 3).clone()


def _shear_matrix(m: Tensor, axis: int) -> Tensor:
    a = identity_affine(m.numel(), m.device, m.dtype)
    a[:, axis, 1 - axis] = m
    return a


def _translate_matrix(t: Tensor, axis: int) -> Tensor:
    a = identity_affine(t.numel(), t.device, t.dtype)
    a[:, axis, 2] = t
    return a


def _split(a: Tensor) -> tuple[Tensor, Tensor]:
    # Veltkamp split of a double into two halves of 26 significant bits (products of halves are exact)
    c = a * 134217729.0  # 2**27 + 1
    hi = c - (c - a)
    return hi, a - hi


def _round15(v: Tensor) -> Tensor:
    """Python's ``round(v, 15)`` exactly (half-even on the exact decimal value), elementwise.

    ``torch.round(v, decimals=15)`` rounds the already rounded product v * 1e15, which lands on a
    .5 now and then that the exact product is not on (about 8% of rotation matrices differed).
    The product's rounding error comes from Dekker's exact product (no FMA needed); at a .5 tie of
    the rounded product, its sign decides. (Away from a tie the rounded product cannot cross a .5,
    which is representable.) |v| <= 1 here, so the product is below 2**50 and the tie test exact.
    """
    if v.dtype != torch.float64:  # MPS: no float64; nothing here is exact anyway
        return torch.round(v, decimals=15)
    scale = torch.full_like(v, 1e15)
    p = v * scale
    vh, vl = _split(v)
    sh, sl = _split(scale)
    err = ((vh * sh - p) + vh * sl + vl * sh) + vl * sl  # v * 1e15 = p + err exactly
    lo = torch.floor(p)
    k = torch.round(p)  # half-even, right unless p is a tie that err breaks
    tie = (p - lo) == 0.5
    k = torch.where(tie & (err > 0), lo + 1, torch.where(tie & (err < 0), lo, k))
    return k / scale  # a true division (torch may multiply by a reciprocal for a scalar divisor)


def rotate_matrix(degrees: Tensor, h: int, w: int) -> Tensor:
    """(N, 2, 3) inverse matrices of PIL ``Image.rotate(degrees)`` (counter-clockwise about (w/2, h/2),
    no expand), formed as PIL forms them: angle % 360, radians, cos and sin rounded to 15 decimals
    (exactly as Python's round), then the centre terms, all in double precision."""
    dt = _geometry_dtype(degrees.device)
    angle = degrees.to(dt).remainder(360.0)  # Python's float %: fmod, then + 360 for a negative remainder
    r = angle * (math.pi / 180.0)  # math.radians; PIL takes cos/sin of -r: cos(-r) = cos r, sin(-r) = -sin r
    cos, sin = _round15(torch.cos(r)), _round15(torch.sin(r))
    cx, cy = w / 2.0, h / 2.0
    a = torch.empty(r.shape[0], 2, 3, device=r.device, dtype=dt)
    # matrix = [cos, sin(-r), 0, -sin(-r), cos, 0]; then (a, b, c, d, e, f)(-cx, -cy) + (cx, cy)
    a[:, 0, 0], a[:, 0, 1], a[:, 0, 2] = cos, -sin, cos * -cx + -sin * -cy + 0.0 + cx
    a[:, 1, 0], a[:, 1, 1], a[:, 1, 2] = sin, cos, sin * -cx + cos * -cy + 0.0 + cy
    return a


def _shear_bicubic(x: Tensor, m: Tensor, axis: int, fill: float) -> Tensor:
    """PIL's BICUBIC affine resampling for a shear, bit for bit. Along the sheared axis the source
    coordinate of output pixel (i, j) is j + 0.5 + m (i + 0.5); across it, i + 0.5 exactly, so
    PIL's 4 x 4 kernel reduces to 4 taps along one axis. PIL's geometry kernel is the cubic
    convolution with a = -1 in Horner form, in double precision, with edge-clamped taps, clipped
    to [0, 255] and truncated; a source coordinate outside [0, size) gives `fill`."""
    xf = _float(x).double()
    if axis == 1:
        xf = xf.transpose(-1, -2)
    n, c, h, w = xf.shape
    m = m.to(device=x.device, dtype=torch.float64).view(n, 1, 1)
    rows = torch.arange(h, device=x.device, dtype=torch.float64).view(1, h, 1) + 0.5
    cols = torch.arange(w, device=x.device, dtype=torch.float64).view(1, 1, w) + 0.5
    src = cols + m * rows  # (n, h, w): PIL's a0 * (j + 0.5) + a1 * (i + 0.5) + a2
    inside = (src >= 0) & (src < w)
    src = src - 0.5
    left = src.floor()
    d = (src - left).unsqueeze(1)
    taps = (left.long().unsqueeze(-1) + torch.arange(-1, 3, device=x.device)).clamp_(0, w - 1)
    v = xf.gather(3, taps.view(n, 1, h, w * 4).expand(n, c, h, w * 4)).view(n, c, h, w, 4)
    v1, v2, v3, v4 = v.unbind(-1)
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    out = (v2 + d * (p2 + d * (p3 + d * p4))).clamp_(0, 255).floor_()
    out = torch.where(inside.unsqueeze(1), out, torch.full_like(out, fill)).float()
    if axis == 1:
        out = out.transpose(-1, -2)
    return _restore(out.contiguous(), x)


def shear_x(x: Tensor, m, fill: float = 128.0) -> Tensor:
    """PIL transform (1, m, 0, 0, 1, 0), bicubic as the CIFAR-10 policy's shear (bit-exact): input
    x = x + m y (shear about the top-left corner)."""
    return _shear_bicubic(x, torch.as_tensor(m, dtype=torch.float64).expand(x.shape[0]), 0, fill)


def shear_y(x: Tensor, m, fill: float = 128.0) -> Tensor:
    """PIL transform (1, 0, 0, m, 1, 0), bicubic: input y = m x + y."""
    return _shear_bicubic(x, torch.as_tensor(m, dtype=torch.float64).expand(x.shape[0]), 1, fill)


def translate_x(x: Tensor, pixels, fill: float = 128.0) -> Tensor:
    """PIL transform (1, 0, t, 0, 1, 0): output(x) = input(x + t); positive t moves content left."""
    return affine(x, _translate_matrix(_as_geometry_param(pixels, x.shape[0], x), 0), fill)


def translate_y(x: Tensor, pixels, fill: float = 128.0) -> Tensor:
    return affine(x, _translate_matrix(_as_geometry_param(pixels, x.shape[0], x), 1), fill)


def rotate(x: Tensor, degrees, fill: float = 128.0) -> Tensor:
    """PIL Image.rotate(degrees) (counter-clockwise, nearest) with the area outside filled."""
    return affine(x, rotate_matrix(_as_geometry_param(degrees, x.shape[0], x), x.shape[2], x.shape[3]), fill)


# ---------------------------------------------------------------------------------------------------
# Colour operations (PIL ImageOps / ImageEnhance semantics)
# ---------------------------------------------------------------------------------------------------

def _gray(xf: Tensor) -> Tensor:
    """PIL's RGB -> L: (19595 R + 38470 G + 7471 B + 2^15) >> 16, exact in float32 (sums < 2^24)."""
    if xf.shape[1] == 1:
        return xf
    r, g, b = xf[:, 0:1], xf[:, 1:2], xf[:, 2:3]
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) * (1.0 / 65536))


def _blend(degenerate: Tensor, xf: Tensor, factor: Tensor) -> Tensor:
    # PIL Image.blend on uint8: truncate(in1 + alpha (in2 - in1)) in single precision, clipped.
    return torch.floor((degenerate + _bc(factor) * (xf - degenerate)).clamp_(0, 255))


def color(x: Tensor, factor) -> Tensor:
    """ImageEnhance.Color: blend with the grayscale image."""
    xf = _float(x)
    return _restore(_blend(_gray(xf), xf, _as_param(factor, x.shape[0], x)), x)


def brightness(x: Tensor, factor) -> Tensor:
    """ImageEnhance.Brightness: blend with black."""
    xf = _float(x)
    return _restore(_blend(torch.zeros_like(xf), xf, _as_param(factor, x.shape[0], x)), x)


def contrast(x: Tensor, factor) -> Tensor:
    """ImageEnhance.Contrast: blend with a flat image at the rounded mean of the grayscale image."""
    xf = _float(x)
    mean = torch.floor(_gray(xf).mean(dim=(1, 2, 3), keepdim=True) + 0.5)
    return _restore(_blend(mean.expand_as(xf), xf, _as_param(factor, x.shape[0], x)), x)


_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0


def sharpness(x: Tensor, factor) -> Tensor:
    """ImageEnhance.Sharpness: blend with ImageFilter.SMOOTH of the image (border pixels unchanged)."""
    xf = _float(x)
    n, c, h, w = xf.shape
    k = on_device(_SMOOTH, xf.device).expand(c, 1, 3, 3)
    smooth = torch.floor(F.conv2d(xf, k, groups=c) + 0.5)
    degenerate = xf.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth
    return _restore(_blend(degenerate, xf, _as_param(factor, n, x)), x)


def posterize(x: Tensor, bits) -> Tensor:
    """ImageOps.posterize: keep the `bits` high bits of each channel."""
    xf = _float(x)
    step = _bc(torch.pow(2.0, 8 - _as_param(bits, x.shape[0], x)))
    return _restore(torch.floor(torch.round(xf) / step) * step, x)


def solarize(x: Tensor, threshold) -> Tensor:
    """ImageOps.solarize: invert every value at or above the threshold."""
    xf = _float(x)
    t = _bc(_as_param(threshold, x.shape[0], x))
    return _restore(torch.where(xf < t, xf, 255 - xf), x)


def invert(x: Tensor) -> Tensor:
    """ImageOps.invert: 255 - x."""
    return _restore(255 - _float(x), x)


def autocontrast(x: Tensor) -> Tensor:
    """ImageOps.autocontrast (cutoff 0), per image and channel: map [min, max] to [0, 255]."""
    xf = torch.round(_float(x))
    lo = xf.amin(dim=(2, 3), keepdim=True)
    hi = xf.amax(dim=(2, 3), keepdim=True)
    # PIL truncates x * scale + offset computed in double precision; doing the same in float64
    # reproduces its results exactly (including values like 254.99999... that truncate to 254).
    # (a true division: torch's `scalar / tensor` multiplies by a reciprocal and can differ in the last bit)
    d = (hi - lo).clamp_(min=1).double()
    scale = torch.full_like(d, 255.0) / d
    out = torch.floor(xf.double() * scale - lo.double() * scale).float()
    return _restore(torch.where(hi > lo, out, xf), x)


def equalize(x: Tensor) -> Tensor:
    """ImageOps.equalize, per image and channel, via batched histograms (scatter_add + cumsum)."""
    n, c, h, w = x.shape
    flat = (x.long() if x.dtype == torch.uint8 else torch.round(_float(x)).clamp_(0, 255).long()).reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    last = hist.gather(1, flat.amax(dim=1, keepdim=True))  # count of the highest value present
    step = torch.div(h * w - last, 255, rounding_mode="floor")
    cum = hist.cumsum(1) - hist  # exclusive cumulative histogram
    lut = torch.div(cum + step // 2, step.clamp(min=1), rounding_mode="floor").clamp_(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device).expand_as(lut))
    out = lut.gather(1, flat).reshape(n, c, h, w)
    return out.to(torch.uint8) if x.dtype == torch.uint8 else out.to(x.dtype if x.is_floating_point() else torch.float32)


# ---------------------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------------------

# The policy as tables, made on the host at import and copied to a device once (on_device).
_POLICY_OPS = torch.tensor([[OPS.index(p[1]), OPS.index(p[4])] for p in CIFAR10_POLICY])
_POLICY_PROBS = torch.tensor([[p[0], p[3]] for p in CIFAR10_POLICY])
# float64: enhancement factors 1 +- m are formed in double precision as in the reference
_POLICY_MAGS = torch.tensor([[MAGNITUDES[p[1]][p[2]], MAGNITUDES[p[4]][p[5]]] for p in CIFAR10_POLICY],
                            dtype=torch.float64)


def _policy_tables(device: torch.device):
    return tuple(on_device(t, device) for t in (_POLICY_OPS, _POLICY_PROBS, _POLICY_MAGS))


def _apply_op(op: int, xs: Tensor, mag: Tensor, sign: Tensor) -> Tensor:
    name = OPS[op]
    if name in ("color", "contrast", "sharpness", "brightness"):
        return {"color": color, "contrast": contrast, "sharpness": sharpness,
                "brightness": brightness}[name](xs, (1 + mag * sign).float())
    if name == "posterize":
        return posterize(xs, mag.float())
    if name == "solarize":
        return solarize(xs, mag.float())
    if name == "autocontrast":
        return autocontrast(xs)
    if name == "equalize":
        return equalize(xs)
    if name == "invert":
        return invert(xs)
    raise AssertionError(name)


def _geometric_matrices(op: Tensor, mag: Tensor, sign: Tensor, h: int, w: int) -> Tensor:
    """(N, 2, 3) affine matrices for translate and rotate, ops 2-4 (identity for any other op id; the
    shears, 0 and 1, are bicubic: `_shear_bicubic`)."""
    dt = _geometry_dtype(op.device)
    sm, m = (mag * sign).to(dt), mag.to(dt)
    a = identity_affine(op.shape[0], op.device, dt)
    a = torch.where((op == 2).view(-1, 1, 1), _translate_matrix(sm * w, 0), a)
    a = torch.where((op == 3).view(-1, 1, 1), _translate_matrix(sm * h, 1), a)
    # DeepVoltaire's rotate has no random sign: always counter-clockwise.
    return torch.where((op == 4).view(-1, 1, 1), rotate_matrix(m, h, w), a)


def _apply_group(g: int, xs: Tensor, op: Tensor, mag: Tensor, sign: Tensor, fill: float) -> Tensor:
    """Group g's operation on images xs (each with its own op id, magnitude and sign)."""
    h, w = xs.shape[-2:]
    if g == 0:
        return affine(xs, _geometric_matrices(op, mag, sign, h, w), fill)
    if g == 1:  # bicubic shear: X or Y per image
        signed = mag * sign
        sx, sy = _shear_bicubic(xs, signed, 0, fill), _shear_bicubic(xs, signed, 1, fill)
        return torch.where((op == 0).view(-1, 1, 1, 1), sx, sy)
    return _apply_op(g, xs, mag, sign)


def apply_by_group(out: Tensor, key: Tensor, groups, run, sync_free: bool) -> Tensor:
    """Give each image whose key is g the result of run(g, images, idx) (key -1: left as it is).

    Grouped (`sync_free` False): the group sizes are read back to the host once, then run gets just
    each present group's images and their batch indices idx. Sync-free: run(g, out, None) for every
    g in `groups` on the whole batch, each image keeping its own group's result; no host reads.
    """
    if sync_free:
        for g in groups:
            out = torch.where((key == g).view(-1, 1, 1, 1), run(g, out, None), out)
        return out
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(key + 1, minlength=max(groups) + 2).tolist()  # read back to the host
    start = counts[0]  # images with no op come first
    for g, cnt in enumerate(counts[1:]):
        if cnt:
            idx = order[start:start + cnt]
            start += cnt
            out.index_copy_(0, idx, run(g, out.index_select(0, idx), idx))
    return out


def autoaugment_cifar10(x: Tensor, generator: torch.Generator | None = None, fill: float = 128.0,
                        sync_free: bool | None = None) -> Tensor:
    """CIFAR10Policy on a batch: a sub-policy per image, each op with its probability and magnitude.

    x: (N, C, H, W) on the 0..255 scale, uint8 or float. Returns the input dtype (integer valued).
    The shears are bicubic as in the released policy (PIL's bicubic, bit-exact).
    Two ways to apply a slot's ops, with the same result:
    - grouped (default on CPU): one batched call per operation present in the batch, on just the
      images that drew it (the five geometric operations share one gather of source pixels). Least work,
      but splitting the batch into groups reads their sizes back (bincount, tolist) each slot.
    - `sync_free` (default on GPU): every operation on the whole batch, each image keeping the
      result of its own op. Ten times the arithmetic, which a GPU does in microseconds, and no host
      sync, so the CPU keeps queueing kernels while the GPU works.
    """
    n, c, h, w = x.shape
    dev = x.device
    if sync_free is None:
        sync_free = sync_free_default(dev)
    out = _float(x).clone()
    ops_t, probs_t, mags_t = _policy_tables(dev)
    pol = torch.randint(len(CIFAR10_POLICY), (n,), generator=generator, device=dev)
    u = torch.rand(n, 2, generator=generator, device=dev)
    sign = torch.randint(0, 2, (n, 2), generator=generator, device=dev).double() * 2 - 1
    for slot in range(2):
        op = ops_t[pol, slot]
        mag = mags_t[pol, slot]
        op = torch.where(u[:, slot] < probs_t[pol, slot], op, torch.full_like(op, -1))
        # Group ids: 0 = translate and rotate, sharing one nearest warp, 1 = bicubic shear, 5.. = the
        # op itself, -1 = no op in this slot.
        key = torch.where(op < 5, torch.full_like(op, 0), op)
        key = torch.where(op < 2, torch.full_like(op, 1), key)
        key = torch.where(op < 0, torch.full_like(op, -1), key)
        groups = (0, 1) + tuple(range(5, len(OPS)))
        mag_s, sign_s = mag, sign[:, slot]

        def run(g: int, xs: Tensor, idx: Tensor | None) -> Tensor:
            if idx is None:
                return _apply_group(g, xs, op, mag_s, sign_s, fill)
            return _apply_group(g, xs, op.index_select(0, idx), mag_s.index_select(0, idx),
                                sign_s.index_select(0, idx), fill)
        out = apply_by_group(out, key, groups, run, sync_free)
    return _restore(out, x) if x.dtype == torch.uint8 else out.to(x.dtype)
