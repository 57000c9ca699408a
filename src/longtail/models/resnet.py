"""ImageNet-style ResNet / ResNeXt backbones with torchvision's parameter names.

Written here because torchvision is not importable with the CPU torch build used by this project.
The backbone's names (conv1, bn1, layer1..layer4, downsample.0/1) match torchvision's, so a
torchvision ImageNet checkpoint loads with `build_model(..., pretrained=path)` (its `fc.*` is
dropped: the classifier is our head). Init follows torchvision: kaiming-normal (fan_out, relu) for
convs, batch norm weight 1 and bias 0.
ResNet-10 is the BasicBlock [1, 1, 1, 1] network used by the decoupling (cRT / tau-norm) code for
ImageNet-LT; ResNet-18/34/50/101/152 and ResNeXt-50 32x4d are torchvision's layouts.
Images fed to torchvision's ImageNet weights are normalised with PRETRAINED_MEAN / PRETRAINED_STD.
"""
from __future__ import annotations

import torch
from torch import nn

# the per-channel normalisation torchvision's ImageNet weights were trained with (RGB, on [0, 1])
PRETRAINED_MEAN = (0.485, 0.456, 0.406)
PRETRAINED_STD = (0.229, 0.224, 0.225)


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)  # stride on the 3x3 (ResNet v1.5)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Backbone: images -> (B, 512 * expansion) features."""

    def __init__(self, block, layers, in_channels: int = 3, groups: int = 1, width_per_group: int = 64):
        super().__init__()
        self.inplanes, self.groups, self.base_width = 64, groups, width_per_group
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width)
                   for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def resnet10(in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, (1, 1, 1, 1), in_channels)


def resnet18(in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels)


def resnet34(in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), in_channels)


def resnet50(in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels)


def resnet101(in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 23, 3), in_channels)


def resnet152(in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, (3, 8, 36, 3), in_channels)


def resnext50_32x4d(in_channels: int = 3) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, groups=32, width_per_group=4)
