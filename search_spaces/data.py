"""Datasets by name. (Helper A: implement the loaders and ``load_dataset``.)"""

from __future__ import annotations

from search_spaces.registry import Registry

DATASETS = Registry(
    "dataset",
    {
        "digits": "search_spaces.datasets.digits:load_digits_splits",
        "mnist1d": "search_spaces.datasets.mnist1d:load_mnist1d_splits",
        "synthetic": "search_spaces.datasets.synthetic:load_synthetic_splits",
        "image_folder": "search_spaces.datasets.local:load_image_folder_splits",
        "cifar10": "search_spaces.datasets.local:load_cifar10_splits",
    },
)
