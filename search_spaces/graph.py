"""The Torch-Pruning adapter both the space builder (build.py) and the pruner (prune.py) use:
tracing a model into a ``DependencyGraph`` and reading its groups."""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import nn


class SpaceError(ValueError):
    """A model autoprune cannot turn into a search space (untraceable, nothing prunable, ...)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def trace_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model``, or a SpaceError saying why not."""
    was_training = model.training
    model.eval()  # tracing runs a forward pass: keep BatchNorm running stats untouched
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
    except Exception as exc:  # noqa: BLE001 - any tracing failure becomes one clear error
        raise SpaceError(
            f"Torch-Pruning cannot trace {type(model).__name__} with an input of shape "
            f"{tuple(example_input.shape)} ({_first_line(exc)})"
        ) from exc
    finally:
        model.train(was_training)


def out_pruner(dg: tp.DependencyGraph, module: nn.Module) -> Any:
    return dg.get_pruner_of_module(module).prune_out_channels


def full_group(dg: tp.DependencyGraph, root: nn.Module) -> Any:
    """The group rooted at ``root`` with every channel index (for importance and features)."""
    n = dg.get_pruner_of_module(root).get_out_channels(root)
    return dg.get_pruning_group(root, out_pruner(dg, root), list(range(n)))
