"""Channel-importance criteria on Torch-Pruning groups.

Each registry target (``l1``, ``l2``, ...) is a factory returning a Torch-Pruning ``Importance``
callable ``(group) -> scores``. :func:`group_scores` adds what the raw importances lack: a fallback
for groups a criterion cannot score (``bn_scale`` on a group without BatchNorm), seeded ``random``,
and gradients for ``taylor`` when the model has none.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

Scorer = Callable[[Any], "torch.Tensor | None"]


def l1() -> Scorer:
    return tp.importance.GroupMagnitudeImportance(p=1, normalizer=None)


def l2() -> Scorer:
    return tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)


def fpgm() -> Scorer:
    return tp.importance.FPGMImportance(p=2, normalizer=None)


def bn_scale() -> Scorer:
    return tp.importance.BNScaleImportance(normalizer=None)


def taylor() -> Scorer:
    return tp.importance.GroupTaylorImportance(normalizer=None)


class _SeededRandom:
    """Random importance that is reproducible: seeded by the group's root name."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, name: str, n: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(name.encode()))
        return torch.rand(n, generator=gen)


def random() -> _SeededRandom:
    return _SeededRandom()


def needs_gradients(criterion: str) -> bool:
    return criterion == "taylor"


def ensure_gradients(model: nn.Module, example_input: torch.Tensor, batches: Any = None) -> None:
    """Fills ``.grad`` for Taylor importance: labelled batches if given, else self-labels.

    With self-labels (the model's own argmax) the cross-entropy gradient is still informative:
    it measures how much each channel moves the model's confidence in its own prediction.
    """
    model.zero_grad(set_to_none=True)
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        if batches:
            for x, y in batches:
                nn.functional.cross_entropy(model(x), y).backward()
        else:
            out = model(example_input)
            out = out.reshape(out.shape[0], -1) if out.dim() > 2 else out
            nn.functional.cross_entropy(out, out.argmax(1).detach()).backward()
    model.train(was_training)


def group_scores(scorer: Any, group: Any, name: str) -> torch.Tensor:
    """Per-channel scores of a full Torch-Pruning group (one per root channel)."""
    n = len(group[0].idxs)
    if isinstance(scorer, _SeededRandom):
        return scorer.score(name, n)
    scores = scorer(group)
    if scores is None:  # e.g. bn_scale on a group without BatchNorm: fall back to group L1
        scores = l1()(group)
    if scores is None:
        return torch.zeros(n)
    scores = torch.nan_to_num(scores.detach().float().flatten(), nan=0.0)
    if scores.numel() != n:
        raise RuntimeError(f"importance returned {scores.numel()} scores for {n} channels of {name!r}")
    return scores
