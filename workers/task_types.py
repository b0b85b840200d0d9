"""The types a job's task is made of, apart from how it is loaded (each model kind's loader,
:mod:`workers.kinds`), so the loaders and the generic entry points (:mod:`workers.task`) build
on them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from search_spaces.space import SearchSpace
from workers.spec import JobSpec


@dataclass(frozen=True)
class WorkerSettings:
    """Where workers find things: caches, data roots, uploaded weights; the pickle flag; the
    operator's plugin allowlist (applied in Ray worker processes, which do not share the
    controller's: :func:`search_spaces.registry.allow_plugins`)."""

    cache_dir: Path
    data_roots: tuple[Path, ...] = ()
    uploads_dir: Path | None = None
    allow_pickle: bool = False
    plugins: tuple[str, ...] = ()


@dataclass
class Task:
    """The dense model (eval mode), data splits, an example input (batch 1), the space."""

    spec: JobSpec
    model: nn.Module
    splits: Any  # search_spaces.data.DataSplits: train / val / test
    example_input: torch.Tensor
    space: SearchSpace
    criterion: str
    info: dict[str, Any] = field(default_factory=dict)
