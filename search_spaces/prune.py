"""Applying a policy to a CNN (Torch-Pruning's dependency graph): a physically pruned deep copy
whose channels equal ``space.kept(policy)``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from search_spaces.criteria import CRITERIA
from search_spaces.depth import remove_blocks
from search_spaces.graph import SpaceError, full_group, out_pruner, trace_graph
from search_spaces.importance import ensure_gradients, group_scores, needs_gradients
from search_spaces.space import PolicyError, SearchSpace


def _output_shape(model: nn.Module, x: torch.Tensor) -> Any:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(was)
    return tuple(out.shape) if isinstance(out, torch.Tensor) else None


def prune_to_counts(
    model: nn.Module,
    kept: Mapping[str, int],
    example_input: torch.Tensor,
    *,
    criterion: str = "l1",
    batches: Any = None,
    kept_out: dict[str, list[int]] | None = None,
) -> nn.Module:
    """Prunes ``model`` IN PLACE so each named group keeps exactly ``kept[name]`` channels.

    Indices are chosen by the criterion's importance, all computed on the unpruned model first
    so that the order in which groups are pruned does not change which channels survive.
    ``kept_out``, if given, receives for every conv/linear whose outputs were pruned the dense
    indices of the output channels it kept (what layer-wise reconstruction must match).
    Sentence embedders have their own surgery (``search_spaces.transformers.prune``, which only
    the text model kind uses).
    """
    scorer = CRITERIA.get(criterion)()
    dense_shape = _output_shape(model, example_input)
    dg = trace_graph(model, example_input)
    if needs_gradients(criterion):
        ensure_gradients(model, example_input, batches)
    modules = dict(model.named_modules())
    plans = []
    for name, k in kept.items():
        root = modules.get(name)
        if root is None:
            raise SpaceError(f"group {name!r}: no such module in {type(model).__name__}")
        group = full_group(dg, root)
        n = len(group[0].idxs)
        if not 1 <= k <= n:
            raise PolicyError(name, f"kept channels {k} outside [1, {n}]")
        if k == n:
            continue
        scores = group_scores(scorer, group, name)
        drop = torch.argsort(scores, stable=True)[: n - k].sort().values.tolist()
        plans.append((root, drop))
    for root, drop in plans:
        pruning = dg.get_pruning_group(root, out_pruner(dg, root), drop)
        if kept_out is not None:
            _record_kept_out(dg, pruning, kept_out)
        pruning.prune()
    model.zero_grad(set_to_none=True)
    shape = _output_shape(model, example_input)
    if shape != dense_shape:
        raise SpaceError(f"pruning changed the output shape from {dense_shape} to {shape}")
    return model


def _record_kept_out(dg: Any, pruning: Any, kept_out: dict[str, list[int]]) -> None:
    for dep, idxs in pruning:
        target = dep.target.module
        if isinstance(target, nn.modules.conv._ConvNd | nn.Linear) and dg.is_out_channel_pruning_fn(dep.handler):
            n = int(target.out_channels if isinstance(target, nn.modules.conv._ConvNd) else target.out_features)
            gone = {int(i) for i in idxs}
            kept_out[dg._module2name[target]] = [i for i in range(n) if i not in gone]


def apply_policy(
    model: nn.Module,
    space: SearchSpace,
    policy: Mapping[str, float],
    *,
    criterion: str = "l1",
    example_input: torch.Tensor,
    batches: Any = None,
    kept_out: dict[str, list[int]] | None = None,
) -> nn.Module:
    """A physically pruned deep copy of ``model``; ``model`` itself is left untouched.

    Args:
        model: the dense model the space was built from (or one of the same architecture).
        space: its search space.
        policy: group name -> ratio, and ``keep_key(unit) -> 0`` for each removed block;
            validated (``PolicyError`` names the bad group or block).
        criterion: importance criterion choosing which channels go (see ``CRITERIA``).
        example_input: an input batch for tracing.
        batches: optional labelled ``(x, y)`` batches for the ``taylor`` criterion's gradients.
        kept_out: receives the kept output indices of every pruned layer (``prune_to_counts``).
    """
    policy = space.validate(policy)
    removed = space.removed_units(policy)
    gone = space.removed_groups(policy)
    # widths first, on the whole model (group roots and channel importance as without depth),
    # then the removed blocks replaced; the groups inside them are not worth pruning
    kept = {n: k for n, k in space.kept(policy).items() if n not in gone}
    pruned = copy.deepcopy(model)
    kept_layers: dict[str, list[int]] = {}
    prune_to_counts(
        pruned, kept, example_input, criterion=criterion, batches=batches, kept_out=kept_layers
    )
    if removed:
        remove_blocks(pruned, removed)
        shape = _output_shape(pruned, example_input)
        dense = _output_shape(model, example_input)
        if shape != dense:
            raise SpaceError(f"removing {removed} changed the output shape from {dense} to {shape}")
    if kept_out is not None:
        kept_out.update(
            {n: k for n, k in kept_layers.items() if not space.in_removed(n, policy)}
        )
    return pruned


def live_kept(space: SearchSpace, policy: Mapping[str, float]) -> dict[str, int]:
    """``space.kept(policy)`` for a model whose removed units are already gone (AGP re-prunes
    such a model step by step): the groups inside them left out, and a group rooted in one
    (a residual chain through it, as in MobileNetV2) keyed by a layer of its that is still there."""
    gone = space.removed_groups(policy)
    kept: dict[str, int] = {}
    for name, k in space.kept(policy).items():
        if name in gone:
            continue
        inside = space.in_removed
        root = name if not inside(name, policy) else next(
            (w for w in space.group(name).weights if not inside(w, policy)), None)
        if root is None:
            raise SpaceError(f"group {name!r}: every layer whose outputs it prunes is in a removed block")
        kept[root] = k
    return kept


def kept_counts(model: nn.Module, space: SearchSpace) -> dict[str, int]:
    """The root layers' actual output channels, to compare with ``space.kept(policy)`` (groups
    rooted in a removed block left out)."""
    modules = dict(model.named_modules())
    out: dict[str, int] = {}
    for g in space.groups:
        m = modules.get(g.name)
        if m is None:
            continue
        out[g.name] = int(m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features)  # type: ignore[arg-type]
    return out
