"""Random inputs of a given shape with random labels: for label-free (``agreement``) jobs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from search_spaces.datasets.common import DataSplits, split_arrays


def load_synthetic_splits(
    *, seed: int = 0, input_shape: Sequence[int] | None = None, num_classes: int | None = None,
    num_samples: int = 512, **_: object,
) -> DataSplits:
    shape = tuple(input_shape or (3, 32, 32))
    classes = int(num_classes or 10)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_samples, *shape)).astype(np.float32)
    y = np.arange(num_samples) % classes  # every class present, so the stratified split works
    rng.shuffle(y)
    return split_arrays(x, y, seed=seed, name="synthetic")
