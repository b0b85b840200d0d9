"""Batch helpers the kinds share: the fixed, seeded order of training batches."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


def cycle(loader: DataLoader) -> Iterator[Any]:
    return itertools.chain.from_iterable(itertools.repeat(loader))


def shuffled(dataset: Dataset, batch_size: int, seed: int) -> DataLoader:
    """Shuffled batches in the same order on every pass of a new loader (the job's seed)."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=gen)
