"""The built-in ``fashion_mnist`` dataset: Debian's IDX files, the published test split kept."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from search_spaces.data import load_dataset
from search_spaces.datasets.fashion_mnist import DEFAULT_DIR, read_idx


def _write_idx(path: Path, data: np.ndarray) -> None:
    header = bytes([0, 0, 8, data.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + data.astype(np.uint8).tobytes())


def test_the_real_files_load_with_the_published_splits() -> None:
    # make test installs Debian's dataset-fashion-mnist (scripts/setup-system.sh)
    splits = load_dataset("fashion_mnist", seed=0)
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    assert len(splits.test) == 10_000 and len(splits.train) + len(splits.val) == 60_000
    x = splits.train.tensors[0]
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05  # standardised
    assert read_idx(DEFAULT_DIR / "t10k-labels-idx1-ubyte.gz")[:3].tolist() == [9, 2, 1]  # the published order


def test_idx_files_elsewhere_and_a_clear_error_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPRUNE_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_dataset("fashion_mnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("t10k", 50)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    splits = load_dataset("fashion_mnist", seed=1)
    assert len(splits.test) == 50 and len(splits.train) + len(splits.val) == 200
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not idx")
    with pytest.raises((ValueError, OSError)):
        load_dataset("fashion_mnist")
