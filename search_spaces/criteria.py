"""Importance criteria by name: each maps to a factory in ``search_spaces.importance`` that
returns a Torch-Pruning ``Importance`` (the job spec's ``search_space.criterion``)."""

from __future__ import annotations

from search_spaces.registry import Registry

CRITERIA = Registry(
    "criterion",
    {
        "l1": "search_spaces.importance:l1",
        "l2": "search_spaces.importance:l2",
        "fpgm": "search_spaces.importance:fpgm",
        "bn_scale": "search_spaces.importance:bn_scale",
        "taylor": "search_spaces.importance:taylor",
        "random": "search_spaces.importance:random",
        "activation": "search_spaces.transformers.prune:activation_criterion",
    },
)
