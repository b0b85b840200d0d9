"""ResNet-20 with Conv1d, for 1-D signals such as MNIST-1D (input: channels x length)."""

from __future__ import annotations

from search_spaces.models.resnet_cifar import ResNetCifar


def resnet1d20(num_classes: int = 10, in_channels: int = 1) -> ResNetCifar:
    return ResNetCifar(20, num_classes, in_channels, dims=1)
