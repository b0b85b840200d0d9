"""MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package with a fixed seed.

Inputs are 1x40 signals (build 1-D models such as ``resnet1d20`` with ``in_channels=1``); the
package's own train/test split is kept, and val is carved from train.
"""

from __future__ import annotations

import contextlib
import functools
import io

import numpy as np

from search_spaces.datasets.common import DataSplits, split_arrays


@functools.lru_cache(maxsize=2)
def _generate(num_samples: int) -> dict:
    """The generator is deterministic and slow (seconds): generate once per process."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = 42  # the benchmark's data seed; ``seed`` only changes the val carve-out
    with contextlib.redirect_stdout(io.StringIO()):  # the generator prints progress
        return make_dataset(args)  # type: ignore[no-any-return]


def load_mnist1d_splits(*, seed: int = 0, num_samples: int = 5000, **_: object) -> DataSplits:
    data = _generate(num_samples)
    x = np.asarray(data["x"], dtype=np.float32)[:, None, :]
    xt = np.asarray(data["x_test"], dtype=np.float32)[:, None, :]
    return split_arrays(
        x, np.asarray(data["y"]), x_test=xt, y_test=np.asarray(data["y_test"]), seed=seed, name="mnist1d"
    )
