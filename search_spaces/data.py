"""Datasets by name; ``load_dataset`` returns train / val (carved from train) / test splits."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from search_spaces.plugins import DATASET_PLUGINS, PREFIX
from search_spaces.registry import Registry

if TYPE_CHECKING:
    from search_spaces.datasets.common import DataSplits

DATASETS = Registry(
    "dataset",
    {
        "digits": "search_spaces.datasets.digits:load_digits_splits",
        "fashion_mnist": "search_spaces.datasets.fashion_mnist:load_fashion_mnist_splits",
        "mnist1d": "search_spaces.datasets.mnist1d:load_mnist1d_splits",
        "synthetic": "search_spaces.datasets.synthetic:load_synthetic_splits",
        "image_folder": "search_spaces.datasets.local:load_image_folder_splits",
        "cifar10": "search_spaces.datasets.local:load_cifar10_splits",
        "docstrings": "search_spaces.datasets.text:load_docstrings",
        "text_lines": "search_spaces.datasets.text:load_text_lines",
    },
)


def load_dataset(
    name: str,
    *,
    path: str | os.PathLike[str] | None = None,
    roots: Sequence[str | os.PathLike[str]] = (),
    seed: int = 0,
    trusted: bool = True,
    **options: Any,
) -> DataSplits:
    """Loads a dataset by name, or a plugin ``entrypoint:<name or module:function>`` (called with
    ``seed=`` and ``path=``; with ``trusted=False``, as workers running a job call it, only a
    registered or operator-allowed one: :mod:`search_spaces.plugins`).

    ``path`` is only used by local datasets and must lie inside one of ``roots`` (ValueError
    naming the path otherwise). ``options`` go to the loader (``input_shape``/``num_classes`` for
    ``synthetic``). Text datasets (``docstrings``, ``text_lines``) return a ``TextCorpus``
    that the task tokenizes with the model's tokenizer.
    """
    from search_spaces.datasets.common import DataSplits

    if name.startswith(PREFIX):
        loader = DATASET_PLUGINS.load(name[len(PREFIX):], trusted=trusted)
        splits = loader(seed=seed, path=path, **options)
        if not isinstance(splits, DataSplits):
            raise ValueError(f"dataset {name!r} returned {type(splits).__name__}, not DataSplits")
        return splits
    loader = DATASETS.get(name)
    return loader(seed=seed, path=path, roots=tuple(roots), **options)  # type: ignore[no-any-return]
