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


class MLP(nn.Module):
    """Pool to 8x8, flatten, two hidden layers: no BatchNorm, so its training under data parallelism
    matches one process exactly (used by the distributed tests), and it trains in a blink."""

    def __init__(self, in_channels: int = 1, hidden: int = 128, grid: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(grid), nn.Flatten(), nn.Linear(in_channels * grid * grid, hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.num_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp(in_channels: int = 1) -> MLP:
    return MLP(in_channels)
