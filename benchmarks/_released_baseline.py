"""The released GALA code's CIFAR-LT training path, re-stated for benchmarks/train_step.py.

What the released code (LDAM-DRW's IMBALANCECIFAR100 + the GALA repository) does per step, without
torchvision (which does not import here): a Dataset of uint8 HWC numpy images, each turned into a
PIL image and pushed through PER-IMAGE transforms in DataLoader workers --

    RandomCrop(32, padding=4), RandomHorizontalFlip(), CIFAR10Policy() (DeepVoltaire, PIL
    ImageOps / ImageEnhance), ToTensor(), Cutout(n_holes=1, length=16), Normalize(mean, std)

-- then an fp32, contiguous-memory-format forward/backward, and the GALA statistics collected by
the released `collect_grad`: a per-sample Python loop into float32 C x C matrices, whose diagonal and
off-diagonal parts are added to cumulative C x C totals every step (the "double accumulation" of
SPEC 3).

The transforms follow torchvision's PIL code paths (pad = ImageOps.expand with fill 0, crop =
Image.crop, flip = Image.transpose, ToTensor = np.array -> permute -> float / 255, Normalize =
sub_/div_) and DeepVoltaire's `autoaugment.py` line for line.
"""
from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps
from torch import nn
from torch.utils.data import Dataset

from longtail.data.autoaugment import CIFAR10_POLICY

# ----------------------------------------------------------------------------- per-image transforms


class RandomCrop:
    """torchvision RandomCrop(size, padding) on a PIL image (constant 0 padding)."""

    def __init__(self, size: int, padding: int):
        self.size, self.padding = size, padding

    def __call__(self, img: Image.Image) -> Image.Image:
        img = ImageOps.expand(img, border=self.padding, fill=0)
        w, h = img.size
        i = random.randint(0, h - self.size)
        j = random.randint(0, w - self.size)
        return img.crop((j, i, j + self.size, i + self.size))


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        if torch.rand(1) < self.p:  # torchvision draws from torch's generator
            return img.transpose(Image.FLIP_LEFT_RIGHT)
        return img


class SubPolicy:
    """DeepVoltaire autoaugment.py SubPolicy, verbatim in behaviour."""

    def __init__(self, p1, operation1, magnitude_idx1, p2, operation2, magnitude_idx2, fillcolor=(128, 128, 128)):
        ranges = {
            "shearX": np.linspace(0, 0.3, 10),
            "shearY": np.linspace(0, 0.3, 10),
            "translateX": np.linspace(0, 150 / 331, 10),
            "translateY": np.linspace(0, 150 / 331, 10),
            "rotate": np.linspace(0, 30, 10),
            "color": np.linspace(0.0, 0.9, 10),
            "posterize": np.round(np.linspace(8, 4, 10), 0).astype(int),
            "solarize": np.linspace(256, 0, 10),
            "contrast": np.linspace(0.0, 0.9, 10),
            "sharpness": np.linspace(0.0, 0.9, 10),
            "brightness": np.linspace(0.0, 0.9, 10),
            "autocontrast": [0] * 10,
            "equalize": [0] * 10,
            "invert": [0] * 10,
        }

        def rotate_with_fill(img, magnitude):
            rot = img.convert("RGBA").rotate(magnitude)
            return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert(img.mode)

        func = {
            "shearX": lambda img, magnitude: img.transform(
                img.size, Image.AFFINE, (1, magnitude * random.choice([-1, 1]), 0, 0, 1, 0),
                Image.BICUBIC, fillcolor=fillcolor),
            "shearY": lambda img, magnitude: img.transform(
                img.size, Image.AFFINE, (1, 0, 0, magnitude * random.choice([-1, 1]), 1, 0),
                Image.BICUBIC, fillcolor=fillcolor),
            "translateX": lambda img, magnitude: img.transform(
                img.size, Image.AFFINE, (1, 0, magnitude * img.size[0] * random.choice([-1, 1]), 0, 1, 0),
                fillcolor=fillcolor),
            "translateY": lambda img, magnitude: img.transform(
                img.size, Image.AFFINE, (1, 0, 0, 0, 1, magnitude * img.size[1] * random.choice([-1, 1])),
                fillcolor=fillcolor),
            "rotate": lambda img, magnitude: rotate_with_fill(img, magnitude),
            "color": lambda img, magnitude: ImageEnhance.Color(img).enhance(1 + magnitude * random.choice([-1, 1])),
            "posterize": lambda img, magnitude: ImageOps.posterize(img, magnitude),
            "solarize": lambda img, magnitude: ImageOps.solarize(img, magnitude),
            "contrast": lambda img, magnitude: ImageEnhance.Contrast(img).enhance(
                1 + magnitude * random.choice([-1, 1])),
            "sharpness": lambda img, magnitude: ImageEnhance.Sharpness(img).enhance(
                1 + magnitude * random.choice([-1, 1])),
            "brightness": lambda img, magnitude: ImageEnhance.Brightness(img).enhance(
                1 + magnitude * random.choice([-1, 1])),
            "autocontrast": lambda img, magnitude: ImageOps.autocontrast(img),
            "equalize": lambda img, magnitude: ImageOps.equalize(img),
            "invert": lambda img, magnitude: ImageOps.invert(img),
        }
        self.p1, self.operation1, self.magnitude1 = p1, func[operation1], ranges[operation1][magnitude_idx1]
        self.p2, self.operation2, self.magnitude2 = p2, func[operation2], ranges[operation2][magnitude_idx2]
        if operation1 == "posterize":
            self.magnitude1 = int(self.magnitude1)
        if operation2 == "posterize":
            self.magnitude2 = int(self.magnitude2)

    def __call__(self, img):
        if random.random() < self.p1:
            img = self.operation1(img, self.magnitude1)
        if random.random() < self.p2:
            img = self.operation2(img, self.magnitude2)
        return img


class CIFAR10Policy:
    """DeepVoltaire CIFAR10Policy: one of 25 sub-policies drawn per image."""

    def __init__(self, fillcolor=(128, 128, 128)):
        # the 25 (p1, op1, magnitude1, p2, op2, magnitude2) sub-policies: the table is data, shared
        self.policies = [SubPolicy(*s, fillcolor) for s in CIFAR10_POLICY]

    def __call__(self, img):
        return self.policies[random.randint(0, len(self.policies) - 1)](img)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """torchvision ToTensor for an RGB PIL image."""
    t = torch.from_numpy(np.array(img, np.uint8, copy=True))
    t = t.view(img.size[1], img.size[0], len(img.getbands())).permute(2, 0, 1).contiguous()
    return t.float().div(255)


class Cutout:
    """uoguelph-mlrg Cutout, on the (C, H, W) tensor."""

    def __init__(self, n_holes: int, length: int):
        self.n_holes, self.length = n_holes, length

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.size(1), img.size(2)
        mask = np.ones((h, w), np.float32)
        for _ in range(self.n_holes):
            y, x = np.random.randint(h), np.random.randint(w)
            y1, y2 = np.clip(y - self.length // 2, 0, h), np.clip(y + self.length // 2, 0, h)
            x1, x2 = np.clip(x - self.length // 2, 0, w), np.clip(x + self.length // 2, 0, w)
            mask[y1:y2, x1:x2] = 0.0
        return img * torch.from_numpy(mask).expand_as(img)


class Normalize:
    def __init__(self, mean, std):
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        return t.sub_(self.mean).div_(self.std)


class Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


def released_train_transform(mean, std) -> Compose:
    """The GALA recipe's CIFAR training transform (SPEC 5), per PIL image."""
    return Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), CIFAR10Policy(), to_tensor,
                    Cutout(n_holes=1, length=16), Normalize(mean, std)])


def released_eval_transform(mean, std) -> Compose:
    return Compose([to_tensor, Normalize(mean, std)])


class NumpyImageDataset(Dataset):
    """IMBALANCECIFAR-style dataset: uint8 (N, H, W, C) numpy images, int labels, PIL per item."""

    def __init__(self, images_hwc: np.ndarray, labels, transform):
        self.data, self.targets, self.transform = images_hwc, [int(t) for t in labels], transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        img = Image.fromarray(self.data[index])
        return self.transform(img), self.targets[index]


# ----------------------------------------------------------------------------- the released GALA loss


class ReleasedGALA(nn.Module):
    """GALA as the released code runs it (SPEC 3, "reference" mode), with its `collect_grad`.

    Adjusted logits: every logit, the target's included, + lambda1 * log(pos_grad_j + eps), minus the
    row constant lambda2 * log(neg_grad_k + eps) of the sample's class k. After the loss, the released
    `collect_grad` (lt-project run_networks.py), step for step and in float32 as released: for each
    sample (one Python iteration each) g_i = |softmax - onehot| / B is added to column k of the
    running C x C matrix and to row k of the epoch matrix; then a fresh eye mask splits the running
    matrix into the cumulative pos/neg C x C totals (double accumulation), whose four row/column sums
    and the classifier pos/neg ratio are recomputed every step. pos_grad = pos row sums (theta),
    neg_grad = neg column sums (phi, "sample").
    """

    def __init__(self, num_classes: int, lambda1: float = 1.2, lambda2: float = 0.9, eps: float = 1e-3):
        super().__init__()
        self.num_classes, self.lambda1, self.lambda2, self.eps = num_classes, lambda1, lambda2, eps
        c = num_classes
        for name in ("cls_fine_grad", "neg_logit_grad_epoch", "cls_pos_fine_grad", "cls_neg_fine_grad"):
            self.register_buffer(name, torch.zeros(c, c))  # float32, as released
        for name in ("pos_grad", "neg_grad", "cls_neg_grad", "sample_pos_grad"):
            self.register_buffer(name, torch.zeros(c))
        self.register_buffer("cls_pos_neg_ratio", torch.ones(c))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        col = (self.lambda1 * torch.log(self.pos_grad + self.eps)).to(logits.dtype)
        row = (self.lambda2 * torch.log(self.neg_grad + self.eps)).to(logits.dtype)[target]
        adjusted = logits + col.unsqueeze(0) - row.unsqueeze(1)
        loss = F.cross_entropy(adjusted, target)
        if self.training:
            self.collect_grad(adjusted.detach(), target)
        return loss

    @torch.no_grad()
    def collect_grad(self, adjusted: torch.Tensor, target: torch.Tensor) -> None:
        b = adjusted.shape[0]
        prob = F.softmax(adjusted, dim=1)
        onehot = F.one_hot(target, self.num_classes).to(prob.dtype)
        grad = ((prob - onehot) / b).abs()
        for i in range(b):  # the released per-sample loop, both of its adds
            self.cls_fine_grad[:, target[i]] += grad[i]
            self.neg_logit_grad_epoch[target[i], :] += grad[i]
        eye_mask = torch.eye(self.num_classes, device=adjusted.device)
        self.cls_pos_fine_grad += self.cls_fine_grad * eye_mask
        self.cls_neg_fine_grad += self.cls_fine_grad * (1 - eye_mask)
        self.pos_grad.copy_(self.cls_pos_fine_grad.sum(dim=1))  # accum_cls_pos_grad: theta
        self.cls_neg_grad.copy_(self.cls_neg_fine_grad.sum(dim=1))
        self.sample_pos_grad.copy_(self.cls_pos_fine_grad.sum(dim=0))
        self.neg_grad.copy_(self.cls_neg_fine_grad.sum(dim=0))  # accum_sample_neg_grad: phi
        self.cls_pos_neg_ratio.copy_((self.pos_grad + 1e-10) / (self.cls_neg_grad + 1e-10))
