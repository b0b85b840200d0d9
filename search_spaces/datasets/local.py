"""Datasets read from a local path, which must lie inside one of the configured data roots.

``cifar10`` reads the standard python batches (``data_batch_1..5``, ``test_batch``). Those files
are pickles, so they are read with an unpickler that only admits the numpy types the format
uses: a tampered file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search_spaces.datasets.common import DataSplits, split_arrays, standardize
from search_spaces.paths import inside

_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def confine(path: str | os.PathLike[str] | None, roots: Sequence[str | os.PathLike[str]]) -> Path:
    """The resolved ``path`` if it lies inside one of ``roots`` (symlinks resolved), else ValueError."""
    if not path:
        raise ValueError("dataset.path: this dataset needs a path")
    if not roots:
        raise ValueError(f"dataset.path {str(path)!r}: no data roots are configured, so no local path is allowed")
    resolved = inside(path, roots)
    if resolved is not None:
        if not resolved.exists():
            raise ValueError(f"dataset.path {str(path)!r}: does not exist")
        return resolved
    raise ValueError(f"dataset.path {str(path)!r}: outside the configured data roots")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    with file.open("rb") as fh:
        d = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"dataset.path: {file.name} is not a CIFAR-10 python batch")
    return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels)


def load_cifar10_splits(*, path: str | None = None, roots: Sequence[str] = (), seed: int = 0, **_: object) -> DataSplits:
    base = confine(path, roots)
    if (base / "cifar-10-batches-py").is_dir():
        base = base / "cifar-10-batches-py"
    train_files = sorted(base.glob("data_batch_*"))
    test_file = base / "test_batch"
    if not train_files or not test_file.exists():
        raise ValueError(f"dataset.path {str(path)!r}: no data_batch_* / test_batch files")
    parts = [_cifar_batch(f) for f in train_files]
    x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y = np.concatenate([p[1] for p in parts])
    xt, yt = _cifar_batch(test_file)
    xt = xt.astype(np.float32) / 255.0
    return split_arrays(standardize(x, x), y, x_test=standardize(xt, x), y_test=yt, seed=seed, name="cifar10")


def load_image_folder_splits(
    *, path: str | None = None, roots: Sequence[str] = (), seed: int = 0, size: int = 32, **_: object
) -> DataSplits:
    """``path/<class>/<image>``; images resized to ``size`` x ``size`` RGB; classes sorted by name."""
    from PIL import Image

    base = confine(path, roots)
    classes = sorted(d.name for d in base.iterdir() if d.is_dir())
    if len(classes) < 2:
        raise ValueError(f"dataset.path {str(path)!r}: expected at least two class folders")
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for f in sorted((base / cls).iterdir()):
            if f.suffix.lower() in _IMAGE_EXTS and inside(f, [base]):
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) / 255.0
                xs.append(arr.transpose(2, 0, 1))
                ys.append(label)
    if not xs:
        raise ValueError(f"dataset.path {str(path)!r}: no images found")
    x = np.stack(xs)
    return split_arrays(standardize(x, x), np.asarray(ys), seed=seed, name="image_folder")
