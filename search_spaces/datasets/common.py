"""DataSplits and the deterministic split every loader uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset


@dataclass
class DataSplits:
    """train / val (carved from train: what searches score on) / test (final reports only)."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    input_shape: tuple[int, ...]  # one example, without batch
    num_classes: int
    name: str = ""

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return self.train.tensors[0][:batch].clone()


def split_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    name: str = "",
) -> DataSplits:
    """Stratified, seeded split; when a test split is given, only val is carved from train."""
    strat = y if len(np.unique(y)) > 1 else None
    if x_test is None or y_test is None:
        x, x_test, y, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=strat)
        strat = y if strat is not None else None
    x_tr, x_val, y_tr, y_val = train_test_split(x, y, test_size=val_fraction, random_state=seed + 1, stratify=strat)

    def ds(a: np.ndarray, b: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.long))

    return DataSplits(
        train=ds(x_tr, y_tr),
        val=ds(x_val, y_val),
        test=ds(x_test, y_test),
        input_shape=tuple(int(d) for d in x_tr.shape[1:]),
        num_classes=int(max(y_tr.max(), y_val.max(), y_test.max()) + 1),
        name=name,
    )


def standardize(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return ((x - ref.mean()) / (ref.std() + 1e-8)).astype(np.float32)
