"""scikit-learn's bundled 8x8 digits (1797 images, offline), upsampled to 1x32x32.

One input channel (the data is greyscale; build models with ``in_channels=1``). Values are
standardised; the split is stratified and seeded (test 20%, val 15% of the rest).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits

from search_spaces.datasets.common import DataSplits, split_arrays, standardize


def load_digits_splits(*, seed: int = 0, size: int = 32, **_: object) -> DataSplits:
    data = load_digits()
    x = torch.as_tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    xs = standardize(x.numpy(), x.numpy())
    return split_arrays(xs, np.asarray(data.target), seed=seed, name="digits")
