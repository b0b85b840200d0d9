"""Fashion-MNIST (Zalando: 70 000 28x28 greyscale clothing images, 10 classes), read from the IDX
files Debian's ``dataset-fashion-mnist`` package installs (nothing is downloaded).

One input channel (build models with ``in_channels=1``). Values are standardised on the training
images; the published test split (10 000) is the test split, and val is carved, stratified and
seeded, from the 60 000 training images.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from search_spaces.datasets.common import DataSplits, split_arrays, standardize

#: where Debian's package puts the files; ``AUTOPRUNE_FASHION_MNIST_DIR`` overrides it
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
PACKAGE = "dataset-fashion-mnist"


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array: big-endian dims after a 4-byte magic whose
    last byte is the number of dimensions (unsigned bytes only: what (Fashion-)MNIST uses)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} values for dimensions {dims}")
    return data.reshape(dims)


def _file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"dataset 'fashion_mnist': {root / (stem + '.gz')} not found; install Debian's {PACKAGE!r} "
        f"package (`apt-get install -y {PACKAGE}`; `make test` does it where it can) or point "
        "AUTOPRUNE_FASHION_MNIST_DIR at a folder with the four IDX files"
    )


def load_fashion_mnist_splits(*, seed: int = 0, **_: object) -> DataSplits:
    root = Path(os.environ.get("AUTOPRUNE_FASHION_MNIST_DIR") or DEFAULT_DIR)
    x_train = read_idx(_file(root, "train-images-idx3-ubyte")).astype(np.float32)[:, None] / 255.0
    y_train = read_idx(_file(root, "train-labels-idx1-ubyte")).astype(np.int64)
    x_test = read_idx(_file(root, "t10k-images-idx3-ubyte")).astype(np.float32)[:, None] / 255.0
    y_test = read_idx(_file(root, "t10k-labels-idx1-ubyte")).astype(np.int64)
    return split_arrays(standardize(x_train, x_train), y_train, seed=seed,
                        x_test=standardize(x_test, x_train), y_test=y_test, name="fashion_mnist")
