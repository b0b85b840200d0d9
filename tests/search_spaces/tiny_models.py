"""Tiny architectures for structure tests (importable, so bundles can rebuild them by entrypoint)."""

from __future__ import annotations

import torch
from torch import nn


class ConcatNet(nn.Module):
    """Two branches concatenated on channels (Inception/DenseNet style), then a fusing conv."""

    def __init__(self, num_classes: int = 5, in_channels: int = 3) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(in_channels, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(40, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fuse(torch.cat([self.a(x), self.b(x)], dim=1))
        return self.head(y.mean((2, 3)))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1) * self.head_dim**-0.5).softmax(-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class TinyEncoder(nn.Module):
    """A 2-block transformer encoder over a 1-D signal cut into patches."""

    def __init__(self, num_classes: int = 5, in_channels: int = 1, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv1d(in_channels, dim, 4, stride=4)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, 64) for _ in range(2)))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).transpose(1, 2)
        return self.head(self.blocks(tokens).mean(1))


class Untraceable(nn.Module):
    """Its forward detaches into numpy: Torch-Pruning's autograd tracing cannot follow it."""

    def __init__(self, num_classes: int = 5, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.from_numpy(self.conv(x).detach().numpy()).mean((2, 3))
        return self.head(y)


def concat_net(num_classes: int = 5, in_channels: int = 3) -> ConcatNet:
    return ConcatNet(num_classes, in_channels)


def tiny_encoder(num_classes: int = 5, in_channels: int = 1) -> TinyEncoder:
    return TinyEncoder(num_classes, in_channels)


class TinyCNN(nn.Module):
    """A ~0.1 MMAC CNN that learns digits in seconds (for training tests)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Linear(16 * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def tiny_cnn(num_classes: int = 10, in_channels: int = 1) -> TinyCNN:
    return TinyCNN(num_classes, in_channels)


class TinyResNet(nn.Module):
    """Four residual blocks (``resnet_cifar.BasicBlock``, so the depth rules know them) on 8 and
    16 channels: ``blocks.0``, ``blocks.1`` and ``blocks.3`` have identity shortcuts (removable),
    ``blocks.2`` downsamples."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        from search_spaces.models.resnet_cifar import BasicBlock

        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(BasicBlock(8, 8, 1, 2), BasicBlock(8, 8, 1, 2), BasicBlock(8, 16, 2, 2),
                                    BasicBlock(16, 16, 1, 2))
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


def tiny_resnet(num_classes: int = 10, in_channels: int = 1) -> TinyResNet:
    return TinyResNet(num_classes, in_channels)
