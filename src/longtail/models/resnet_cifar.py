"""ResNet-32 for 32x32 images, as in the LDAM-DRW / GALA releases (`resnet32` of resnet_cifar.py).

3 stages x 5 BasicBlocks, 16/32/64 channels, 64-d feature after global average pooling. Shortcuts
that change shape are "option A": take every second pixel and zero-pad the new channels (no
parameters). Conv (and the linear head, see models.build_model) weights are kaiming-normal
initialised like the released `_weights_init`; batch norm keeps PyTorch's default init.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _weights_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_normal_(m.weight)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad channels (planes // 4 on each side)."""

    def __init__(self, pad_channels: int):
        super().__init__()
        self.pad_channels = pad_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad_channels
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p), "constant", 0.0)


class CifarBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Backbone: images -> (B, 64) features."""

    def __init__(self, num_blocks=(5, 5, 5), in_channels: int = 3, widths=(16, 32, 64)):
        super().__init__()
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_layer(widths[0], num_blocks[0], 1)
        self.layer2 = self._make_layer(widths[1], num_blocks[1], 2)
        self.layer3 = self._make_layer(widths[2], num_blocks[2], 2)
        self.num_features = widths[2]
        self.apply(_weights_init)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(CifarBasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # Global average pool + flatten: no .view, so channels_last tensors work.
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


def resnet32(in_channels: int = 3) -> CifarResNet:
    return CifarResNet((5, 5, 5), in_channels)
