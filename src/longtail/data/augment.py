"""Batched training augmentation on image tensors (airbench style).

A whole batch is augmented with a handful of tensor calls on the device it lives on; every random
choice is per image and comes from an explicit `torch.Generator` (on that device), so a seeded
generator reproduces the batch exactly. Input batches are uint8 (B, C, H, W).

Recipes (`build_train_augment(kind, ...)`):
- "none": normalise only.
- "crop_flip" (LDAM-DRW): random crop with zero padding (pad = size // 8, i.e. 4 for 32x32), flip.
- "autoaugment" (released GALA): RandomCrop(32, padding=4), RandomHorizontalFlip, CIFAR10Policy,
  ToTensor, Cutout(1 hole, 16), Normalize -- in that order.
- "imagenet": RandomResizedCrop(image_size, scale (0.08, 1), ratio (3/4, 4/3)), flip,
  ColorJitter(0.4, 0.4, 0.4) in a random order per image, Normalize. List datasets take the crop
  from the whole image as they decode it (ListDataset, crop="random_resized") and pass
  image_size x image_size batches here, built with `cropped=True`: flip, jitter and normalise only.
- "imagenet_randaugment" (released GALA, list datasets): reflect-pad 4, RandomResizedCrop, flip,
  ColorJitter(0.4, 0.4, 0.4) as torchvision applies it to PIL images (ImageEnhance, each step
  quantised), RandAugment rand-n2-m10-mstd0.5 filled with the mean colour
  (`longtail.data.randaugment`), Normalize. List datasets pad and crop as they decode
  (ListDataset, pad=4), as for "imagenet".
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .autoaugment import (  # noqa: F401  (re-exported: the individual operations are public here too)
    CIFAR10_POLICY,
    OPS,
    affine,
    autoaugment_cifar10,
    autocontrast,
    brightness,
    color,
    contrast,
    equalize,
    invert,
    posterize,
    rotate,
    sharpness,
    shear_x,
    shear_y,
    solarize,
    sync_free_default,
    translate_x,
    translate_y,
)
from .device_constants import constant, on_device
from .randaugment import rand_augment

__all__ = [
    "AUGMENTS", "LARGE_IMAGE_AUGMENTS", "RANDAUGMENT_PAD", "build_train_augment", "build_eval_transform", "normalize", "crop_flip",
    "random_crop_flip", "hflip", "cutout", "random_cutout", "resized_crop", "random_resized_crop",
    "color_jitter", "autoaugment_cifar10", "CIFAR10_POLICY", "OPS", "affine", "autocontrast",
    "brightness", "color", "contrast", "equalize", "invert", "posterize", "rotate", "sharpness",
    "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
]

AUGMENTS = ("none", "crop_flip", "autoaugment", "imagenet", "imagenet_randaugment")
LARGE_IMAGE_AUGMENTS = ("imagenet", "imagenet_randaugment")  # random resized crop: list datasets crop on decoding
# the released GALA recipe reflect-pads every image by 4 pixels before its random resized crop
RANDAUGMENT_PAD = 4


def _check_batch(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a batch of images (B, C, H, W), got shape {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------------------
# Crop and flip
# ---------------------------------------------------------------------------------------------------

def crop_flip(x: Tensor, pad: int, size: int, offsets: Tensor, flip: Tensor | None = None) -> Tensor:
    """Crop each image of the zero-padded batch at its own offset, and mirror the ones flagged.

    offsets: (B, 2) integer (top, left) in the padded image, each in [0, H + 2 pad - size];
    flip: (B,) bool or None. One gather for the whole batch; works for any dtype and device.
    """
    _check_batch(x)
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    hp, wp = h + 2 * pad, w + 2 * pad
    ar = torch.arange(size, device=x.device)
    rows = offsets[:, 0:1].to(x.device) + ar  # (B, size)
    cols = offsets[:, 1:2].to(x.device) + ar
    if flip is not None:
        cols = torch.where(flip.to(x.device).view(-1, 1), cols.flip(1), cols)
    idx = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, size * size).expand(b, c, -1)
    return xp.reshape(b, c, hp * wp).gather(2, idx).reshape(b, c, size, size)


def random_crop_flip(x: Tensor, pad: int, size: int, generator: torch.Generator | None = None,
                     flip_p: float = 0.5) -> Tensor:
    """RandomCrop(size, padding=pad) (zero fill) then RandomHorizontalFlip(flip_p), per image."""
    _check_batch(x)
    b, _, h, w = x.shape
    if h + 2 * pad < size or w + 2 * pad < size:
        raise ValueError(f"crop size {size} is larger than the padded image {h + 2 * pad}x{w + 2 * pad}")
    top = torch.randint(0, h + 2 * pad - size + 1, (b,), generator=generator, device=x.device)
    left = torch.randint(0, w + 2 * pad - size + 1, (b,), generator=generator, device=x.device)
    flip = torch.rand(b, generator=generator, device=x.device) < flip_p
    return crop_flip(x, pad, size, torch.stack([top, left], 1), flip)


def hflip(x: Tensor, mask: Tensor) -> Tensor:
    """Mirror the images where mask (B,) is True."""
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


# ---------------------------------------------------------------------------------------------------
# Cutout (DeVries & Taylor, as in uoguelph-mlrg/Cutout)
# ---------------------------------------------------------------------------------------------------

def cutout(x: Tensor, centres: Tensor, length: int = 16) -> Tensor:
    """Zero a length x length square per image centred at centres (B, 2) = (y, x), clipped at the
    borders: rows [y - length//2, y + length//2) as the released Cutout does. Zero is applied in the
    pixel space the input is in (the released code zeroes after ToTensor, before Normalize)."""
    _check_batch(x)
    _, _, h, w = x.shape
    half = length // 2
    cy, cx = centres[:, 0:1].to(x.device), centres[:, 1:2].to(x.device)
    r = torch.arange(h, device=x.device)
    q = torch.arange(w, device=x.device)
    in_r = (r >= cy - half) & (r < cy + half)  # (B, H)
    in_c = (q >= cx - half) & (q < cx + half)  # (B, W)
    hole = (in_r[:, :, None] & in_c[:, None, :])[:, None]
    return x.masked_fill(hole, 0)


def random_cutout(x: Tensor, generator: torch.Generator | None = None, length: int = 16) -> Tensor:
    """Cutout with the centre drawn uniformly over the image (np.random.randint(h), (w))."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=generator, device=x.device)
    cx = torch.randint(0, w, (b,), generator=generator, device=x.device)
    return cutout(x, torch.stack([cy, cx], 1), length)


# ---------------------------------------------------------------------------------------------------
# Large-image recipe: random resized crop, colour jitter
# ---------------------------------------------------------------------------------------------------

def resized_crop(x: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Crop boxes (B, 4) = (top, left, height, width) in pixels and resize each to size x size with
    bilinear sampling (one affine_grid + grid_sample call); mirror the ones flagged in flip.
    Returns float32 on the input's value scale."""
    _check_batch(x)
    b, c, h, w = x.shape
    boxes = boxes.to(device=x.device, dtype=torch.float32)
    top, left, bh, bw = boxes.unbind(1)
    theta = torch.zeros(b, 2, 3, device=x.device)
    sx = bw / w
    if flip is not None:
        sx = torch.where(flip.to(x.device), -sx, sx)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * top + bh) / h - 1
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop_boxes(b: int, h: int, w: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), generator=None,
                              device="cpu", attempts: int = 10) -> Tensor:
    """torchvision RandomResizedCrop.get_params, vectorised: (B, 4) boxes (top, left, height, width)
    for B images of h x w; 10 attempts per image, the first valid one wins, else the centre crop
    with the ratio clamped."""
    area = h * w
    s = torch.empty(b, attempts, device=device).uniform_(scale[0], scale[1], generator=generator)
    logr = torch.empty(b, attempts, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                             generator=generator)
    r = torch.exp(logr)
    cw = torch.round(torch.sqrt(area * s * r))
    ch = torch.round(torch.sqrt(area * s / r))
    ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
    first = torch.argmax(ok.int(), dim=1, keepdim=True)
    any_ok = ok.any(1)
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = float(w), float(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = float(round(h * ratio[1])), float(h)
    else:
        fw, fh = float(w), float(h)
    cw = torch.where(any_ok, cw, torch.full_like(cw, fw))
    ch = torch.where(any_ok, ch, torch.full_like(ch, fh))
    u = torch.rand(b, 2, generator=generator, device=device)
    top = torch.where(any_ok, torch.floor(u[:, 0] * (h - ch + 1)), torch.floor((h - ch) / 2))
    left = torch.where(any_ok, torch.floor(u[:, 1] * (w - cw + 1)), torch.floor((w - cw) / 2))
    return torch.stack([top, left, ch, cw], 1)


def random_resized_crop(x: Tensor, size: int, generator: torch.Generator | None = None,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip_p: float = 0.5) -> Tensor:
    """RandomResizedCrop(size) + RandomHorizontalFlip(flip_p), per image; float32 output."""
    _check_batch(x)
    b, _, h, w = x.shape
    boxes = random_resized_crop_boxes(b, h, w, scale, ratio, generator, x.device)
    flip = torch.rand(b, generator=generator, device=x.device) < flip_p
    return resized_crop(x, boxes, size, flip)


_JITTER_ORDERS = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


def _gray_f(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    return (0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


# ColorJitter on a PIL image: ImageEnhance Brightness, Contrast and Color (its saturation)
_PIL_JITTER = (brightness, contrast, color)


def _jitter_op(op: int, xs: Tensor, f: Tensor, max_value: float, pil: bool = False) -> Tensor:
    if pil:
        return _PIL_JITTER[op](xs, f.flatten())
    if op == 0:
        ys = xs * f
    elif op == 1:
        m = _gray_f(xs).mean(dim=(1, 2, 3), keepdim=True)
        ys = m + f * (xs - m)
    else:
        g = _gray_f(xs)
        ys = g + f * (xs - g)
    return ys.clamp_(0, max_value)


def color_jitter(x: Tensor, factors: Tensor, order: Tensor | None = None, max_value: float = 1.0,
                 sync_free: bool | None = None, pil: bool = False) -> Tensor:
    """ColorJitter with explicit per-image factors (B, 3) = (brightness, contrast, saturation),
    applied in the per-image order (B, 3) of op ids (0 brightness, 1 contrast, 2 saturation;
    default 0, 1, 2), torchvision's tensor semantics (clamped to [0, max_value] after each op).
    `pil`: torchvision's semantics on PIL images instead (ImageEnhance, every op rounded to 8 bits,
    the contrast mean that of the 8-bit grey image); the input is then on the 0..255 scale.

    Grouped (default on CPU): each op on the images that have it in a slot, found with nonzero (a
    host sync). `sync_free` (default on GPU): each op on every image, the right one kept per image.
    """
    x = x.float().clone()
    b = x.shape[0]
    if sync_free is None:
        sync_free = sync_free_default(x.device)
    if order is None:
        order = torch.arange(3, device=x.device).expand(b, 3)
    order = order.to(x.device)
    factors = factors.to(x.device, torch.float32)
    for slot in range(3):
        for op in range(3):
            if sync_free:
                ys = _jitter_op(op, x, factors[:, op].view(-1, 1, 1, 1), max_value, pil)
                x = torch.where((order[:, slot] == op).view(-1, 1, 1, 1), ys, x)
                continue
            idx = (order[:, slot] == op).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            f = factors.index_select(0, idx)[:, op].view(-1, 1, 1, 1)
            x.index_copy_(0, idx, _jitter_op(op, x.index_select(0, idx), f, max_value, pil))
    return x


def _random_color_jitter(x: Tensor, generator, strength: float = 0.4, max_value: float = 1.0,
                         sync_free: bool | None = None, pil: bool = False) -> Tensor:
    b = x.shape[0]
    factors = torch.empty(b, 3, device=x.device).uniform_(1 - strength, 1 + strength, generator=generator)
    perm = torch.randint(0, 6, (b,), generator=generator, device=x.device)
    return color_jitter(x, factors, on_device(_JITTER_ORDERS, x.device)[perm], max_value, sync_free, pil)


# ---------------------------------------------------------------------------------------------------
# Normalisation and the recipes
# ---------------------------------------------------------------------------------------------------

def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float], max_value: float = 255.0) -> Tensor:
    """(x / max_value - mean) / std per channel, as float32 (uint8 input: max_value 255)."""
    c = x.shape[1]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries but the images have {c} channels")
    m = constant(tuple(float(v) for v in mean), torch.float32, x.device).view(1, c, 1, 1)
    s = constant(tuple(float(v) for v in std), torch.float32, x.device).view(1, c, 1, 1)
    return (x.float() * (1.0 / max_value) - m) / s


class TrainAugment:
    """Callable (uint8 batch, generator) -> normalised float32 batch; see build_train_augment."""

    def __init__(self, kind: str, mean, std, image_size: int, sync_free: bool | None = None,
                 cropped: bool = False):
        if kind not in AUGMENTS:
            raise ValueError(f"unknown augmentation {kind!r}; choose one of {AUGMENTS}")
        if cropped and kind not in LARGE_IMAGE_AUGMENTS:
            raise ValueError(f"cropped=True (images cropped as they were decoded) goes with {' or '.join(map(repr, LARGE_IMAGE_AUGMENTS))}, "
                             f"not {kind!r}")
        self.kind, self.mean, self.std, self.image_size = kind, tuple(mean), tuple(std), int(image_size)
        self.sync_free, self.cropped = sync_free, cropped
        self.pad = self.image_size // 8
        # RandAugment fills what its geometric ops uncover with the mean colour, as released
        self.fill = tuple(min(255, round(255 * m)) for m in self.mean)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _check_batch(x)
        if x.dtype != torch.uint8:
            raise TypeError(f"training augmentation expects uint8 images, got {x.dtype}")
        size = self.image_size
        if self.kind in LARGE_IMAGE_AUGMENTS:
            released = self.kind == "imagenet_randaugment"
            if not self.cropped:
                if released:
                    if min(x.shape[-2:]) <= RANDAUGMENT_PAD:
                        raise ValueError(f"{self.kind!r} reflect-pads by {RANDAUGMENT_PAD} pixels: images must be larger "
                                         f"than that, got {tuple(x.shape[-2:])}")
                    x = F.pad(x.float(), (RANDAUGMENT_PAD,) * 4, mode="reflect")
                y = random_resized_crop(x, size, generator)  # float, 0..255
                if released:  # PIL hands the next steps 8-bit images
                    y = y.round_().clamp_(0, 255)
            elif x.shape[-2:] != (size, size):
                raise ValueError(f"cropped {self.kind!r} batches must be {size}x{size}, got {tuple(x.shape[-2:])}")
            else:  # the random resized crop was taken on decoding: only the flip is left
                y = hflip(x.float(), torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5)
            y = _random_color_jitter(y, generator, 0.4, max_value=255.0, sync_free=self.sync_free, pil=released)
            if released:
                y = rand_augment(y, generator, fill=self.fill, sync_free=self.sync_free)
            return normalize(y, self.mean, self.std)
        if x.shape[-2:] != (size, size):
            raise ValueError(f"augmentation {self.kind!r} expects {size}x{size} images, got "
                             f"{tuple(x.shape[-2:])}; resize them first or set image_size")
        if self.kind == "none":
            return normalize(x, self.mean, self.std)
        y = random_crop_flip(x, self.pad, size, generator)
        if self.kind == "autoaugment":
            y = autoaugment_cifar10(y.float(), generator, sync_free=self.sync_free)
            # Cutout zeroes after ToTensor: 0 in [0, 1] space is 0 here too, before Normalize.
            y = random_cutout(y, generator, length=max(1, size // 2))  # 16 for 32x32
        return normalize(y, self.mean, self.std)

    def __repr__(self) -> str:
        return (f"TrainAugment(kind={self.kind!r}, image_size={self.image_size}, mean={self.mean}, std={self.std}"
                + (", cropped=True)" if self.cropped else ")"))


def build_train_augment(kind: str, mean, std, image_size: int, sync_free: bool | None = None,
                        cropped: bool = False) -> Callable[[Tensor, torch.Generator | None], Tensor]:
    """Batched training augmentation: uint8 (B, C, H, W) -> float32 normalised (B, C, S, S).

    `sync_free` picks how per-image random ops are applied (same result either way): None = by
    device, grouped on CPU (least arithmetic), sync-free on GPU (no device-to-host reads).
    `cropped`: the batch was random-resized-cropped as it was decoded ("imagenet" and
    "imagenet_randaugment" on list datasets; the latter padded first).
    """
    return TrainAugment(kind, mean, std, image_size, sync_free, cropped)


class EvalTransform:
    def __init__(self, mean, std):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, x: Tensor) -> Tensor:
        _check_batch(x)
        return normalize(x, self.mean, self.std)

    def __repr__(self) -> str:
        return f"EvalTransform(mean={self.mean}, std={self.std})"


def build_eval_transform(mean, std) -> Callable[[Tensor], Tensor]:
    """uint8 (B, C, H, W) -> float32 normalised, no augmentation."""
    return EvalTransform(mean, std)
