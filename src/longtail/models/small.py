"""A small fast CNN for tiny images (the embedded 8x8 grayscale digits demo): trains in seconds."""
from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """conv32 - conv32 - pool - conv64 - conv64 - global average pool -> (B, 64) features."""

    def __init__(self, in_channels: int = 1, widths=(32, 64)):
        super().__init__()
        w1, w2 = widths
        self.features = nn.Sequential(_block(in_channels, w1), _block(w1, w1), nn.MaxPool2d(2),
                                      _block(w1, w2), _block(w2, w2), nn.AdaptiveAvgPool2d(1))
        self.num_features = w2
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.features(x), 1)


def convnet(in_channels: int = 1) -> ConvNet:
    return ConvNet(in_channels)
