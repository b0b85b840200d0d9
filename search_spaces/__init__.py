"""autoprune: search_spaces — what can be pruned and what a policy does to a model.

Light to import: the torch-heavy parts load on first attribute access (module ``__getattr__``),
so agents importing ``search_spaces.space`` do not pay for torch / Torch-Pruning.
"""

from __future__ import annotations

import importlib
from typing import Any

from search_spaces.space import Group, LayerCost, Policy, PolicyError, SearchSpace, Unit

_LAZY = {
    "build_space": "search_spaces.build",
    "SpaceError": "search_spaces.graph",
    "apply_policy": "search_spaces.prune",
    "prune_to_counts": "search_spaces.prune",
    "kept_counts": "search_spaces.prune",
    "build_model": "search_spaces.zoo",
    "ZOO": "search_spaces.zoo",
    "DEFAULT_INPUT_SHAPES": "search_spaces.zoo",
    "load_dataset": "search_spaces.data",
    "DATASETS": "search_spaces.data",
    "DataSplits": "search_spaces.datasets.common",
    "confine": "search_spaces.datasets.local",
    "CRITERIA": "search_spaces.criteria",
    "recalibrate_bn": "search_spaces.calibrate",
    "count_macs_params": "search_spaces.measure",
    "measure_latency": "search_spaces.measure",
    "LatencyStats": "search_spaces.measure",
    "train_reference": "search_spaces.reference",
    "finetune": "search_spaces.training",
    "evaluate_accuracy": "search_spaces.training",
    "save_bundle": "search_spaces.bundle",
    "load_bundle": "search_spaces.bundle",
    "rebuild_pruned": "search_spaces.bundle",
}

__all__ = ["Group", "LayerCost", "Policy", "PolicyError", "SearchSpace", "Unit", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
