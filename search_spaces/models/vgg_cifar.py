"""VGG-16 with BatchNorm, CIFAR variant (one 512->classes linear head, as in Liu et al. 2017)."""

from __future__ import annotations

import torch
from torch import nn

_CFG16: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


class VGG(nn.Module):
    def __init__(self, cfg: list[int | str], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def vgg16_bn(num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(_CFG16, num_classes, in_channels)
