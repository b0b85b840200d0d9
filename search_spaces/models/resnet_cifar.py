"""CIFAR-style ResNets (He et al. 2016, 6n+2 layers), for 2-D images or 1-D signals.

Downsampling shortcuts are 1x1 conv + BN (option B) rather than zero-padding (option A): padding
shortcuts are not a module Torch-Pruning can follow, while a projection couples cleanly.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dims: int) -> None:
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = bn(cout)
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = bn(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv(cin, cout, 1, stride, bias=False), bn(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) with stages of 16/32/64 channels, each times ``widen``."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, dims: int = 2,
                 widen: int = 1) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        stages = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = conv(in_channels, stages[0], 3, 1, 1, bias=False)
        self.bn1 = bn(stages[0])
        layers: list[nn.Module] = []
        cin = stages[0]
        for i, width in enumerate(stages):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, width, 2 if (i > 0 and j == 0) else 1, dims))
                cin = width
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(stages[2], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet20(num_classes: int = 10, in_channels: int = 3) -> ResNetCifar:
    return ResNetCifar(20, num_classes, in_channels)


def wide_resnet20_2(num_classes: int = 10, in_channels: int = 3) -> ResNetCifar:
    """resnet20 with every stage twice as wide (32/64/128 channels): convolutions wide enough that
    int8 kernels pay in ONNX Runtime after pruning, where resnet20's do not (docs/benchmarks.md)."""
    return ResNetCifar(20, num_classes, in_channels, widen=2)


def resnet56(num_classes: int = 10, in_channels: int = 3) -> ResNetCifar:
    return ResNetCifar(56, num_classes, in_channels)
