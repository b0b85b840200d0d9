"""Building a :class:`SearchSpace` from a model with Torch-Pruning's ``DependencyGraph``.

One Group per set of coupled channels (rooted at the conv/linear whose outputs it removes); the
groups that reach the model's output (the classifier) or contain an ignored layer are left out.
Costs are per layer: a layer's MACs/params scale with the keep-fraction of the group owning its
outputs times that of the group owning its inputs; inputs fed by a concatenation of several
groups are split into one LayerCost per part, so the analytic count stays exact.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from search_spaces.criteria import CRITERIA
from search_spaces.depth import removable_blocks, units_of
from search_spaces.graph import SpaceError, trace_graph
from search_spaces.importance import ensure_gradients, group_scores, needs_gradients
from search_spaces.measure import layer_macs
from search_spaces.prune import prune_to_counts
from search_spaces.space import Group, LayerCost, RoundTo, SearchSpace, parse_round_to

_ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels


def _reaches_output(dg: tp.DependencyGraph, group: Any) -> bool:
    """True when pruning the group would change the model's output.

    That is when a terminal node of the graph (one nothing consumes) loses output channels; a
    classifier losing *input* channels is fine.
    """
    return any(not dep.target.outputs and dg.is_out_channel_pruning_fn(dep.handler) for dep, _ in group)


def iter_groups(dg: tp.DependencyGraph, ignored: Sequence[nn.Module]) -> Iterable[tuple[str, Any]]:
    """(root name, full group) for every prunable group, in graph order."""
    for group in dg.get_all_groups(ignored_layers=list(ignored), root_module_types=_ROOT_TYPES):
        if _reaches_output(dg, group):
            continue
        root = group[0].dep.target.module
        yield dg._module2name[root], group


def _kind(root: nn.Module, modules: list[nn.Module]) -> str:
    if any(isinstance(m, nn.MultiheadAttention) for m in modules):
        return "attention"
    if any(_is_depthwise(m) for m in modules):
        return "depthwise"
    if isinstance(root, nn.Conv1d):
        return "conv1d"
    if isinstance(root, nn.modules.conv._ConvNd):
        return "conv"
    return "linear"


def _in_channels(m: nn.Module) -> int:
    if isinstance(m, nn.modules.conv._ConvNd):
        return int(m.in_channels)
    if isinstance(m, nn.Linear):
        return int(m.in_features)
    return 0


def _layer_costs(
    model: nn.Module,
    macs: dict[str, int],
    owners: dict[str, str],
    in_parts: dict[str, list[tuple[str, int]]],
    param_groups: dict[str, str],
) -> list[LayerCost]:
    costs: list[LayerCost] = []
    covered = 0
    for name, m in model.named_modules():
        own = list(m.parameters(recurse=False))
        if not own and name not in macs:
            continue
        out = owners.get(name)
        matrix = sum(p.numel() for p in own if p.dim() >= 2)
        vector = sum(p.numel() for p in own if p.dim() < 2)
        covered += matrix + vector
        total_in = _in_channels(m)
        parts = [] if _is_depthwise(m) or not total_in else in_parts.get(name, [])
        rest = total_in - sum(n for _, n in parts) if total_in else 1
        mm = macs.get(name, 0)
        outs = (out,) if out else ()
        for g, n in parts:
            frac = n / total_in
            by = tuple(dict.fromkeys((*outs, g)))
            costs.append(LayerCost(f"{name}<{g}", round(mm * frac), round(matrix * frac), by))
        if rest > 0 and (mm or matrix):
            frac = rest / total_in if total_in else 1.0
            costs.append(LayerCost(name, round(mm * frac), round(matrix * frac), outs))
        if vector:
            costs.append(LayerCost(f"{name}#vec", 0, vector, outs))
    # Parameters held outside modules (positional embeddings, tokens): scaled by their group if any.
    for pname, p in model.named_parameters():
        if pname in param_groups:
            costs.append(LayerCost(pname, 0, p.numel(), (param_groups[pname],)))
            covered += p.numel()
    left = sum(p.numel() for p in model.parameters()) - covered
    if left > 0:
        costs.append(LayerCost("<other>", 0, left, ()))
    return costs


def _probe(model: nn.Module, groups: list[tuple[str, int]], example_input: torch.Tensor) -> set[str]:
    """Names of groups whose pruning breaks the forward pass, found by really pruning a copy.

    Torch-Pruning couples channels through reshapes as if they were flat (an attention ``qkv``
    projection reshaped into heads, say); such a group traces fine but cannot run pruned. One
    probe prunes every group to half at once; only if that fails is each group tried alone.
    """
    def runs(subset: list[tuple[str, int]]) -> bool:
        try:
            prune_to_counts(copy.deepcopy(model), {n: max(1, c // 2) for n, c in subset}, example_input)
        except Exception:  # noqa: BLE001 - any failure means "cannot be pruned"
            return False
        return True

    if runs(groups):
        return set()
    return {n for n, c in groups if not runs([(n, c)])}


def build_space(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    max_ratio: float = 0.8,
    round_to: RoundTo = "auto",
    ignore: Sequence[str] = (),
    criterion: str = "l1",
    precisions: Sequence[str] = ("fp32",),
    depth: bool = False,
) -> SearchSpace:
    """The search space of ``model`` (which is left untouched).

    Args:
        model: any model Torch-Pruning can trace.
        example_input: a batch (usually of one) with the model's input shape.
        max_ratio: the largest pruning ratio a policy may give a group.
        round_to: kept channels are rounded up to a multiple of this, or "auto" (a step that
            scales with each group's width: ``space.auto_step``).
        ignore: module names never pruned (their groups are left out of the space).
        criterion: importance criterion used for ``Group.importance`` (see ``CRITERIA``).
        precisions: what a policy may run each group in (``search_space.precision``).
        depth: whether policies may also remove residual blocks with an identity shortcut
            (``search_space.depth``; ``search_spaces.depth.removable_blocks`` says which).
    """
    if not 0.0 <= max_ratio < 1.0:
        raise ValueError(f"max_ratio must be in [0, 1), got {max_ratio}")
    round_to = parse_round_to(round_to)
    scorer = CRITERIA.get(criterion)()
    work, modules, dg = _traced_copy(model, example_input, ignore, criterion)
    raw = _prunable_groups(model, dg, modules, ignore, example_input)
    roles = _channel_roles(dg, work, raw)
    costs = _layer_costs(work, layer_macs(work, example_input), roles.owners, roles.in_parts, roles.param_groups)
    weights: dict[str, list[str]] = {}
    for layer, owner in roles.owners.items():
        if isinstance(modules.get(layer), _ROOT_TYPES):
            weights.setdefault(owner, []).append(layer)
    groups = [
        replace(_describe_group(index, gname, group, modules[gname], roles.members[gname], costs, scorer, dg),
                weights=tuple(weights.get(gname, ())))
        for index, (gname, group) in enumerate(raw)
    ]
    units = units_of(removable_blocks(work, example_input, ignore), "block", groups, costs) if depth else ()
    return SearchSpace(
        groups=tuple(groups),
        costs=tuple(costs),
        dense_macs=int(sum(c.macs for c in costs)),
        dense_params=int(sum(p.numel() for p in work.parameters())),
        input_shape=tuple(int(d) for d in example_input.shape[1:]),
        max_ratio=max_ratio,
        round_to=round_to,
        ignored=tuple(ignore),
        precisions=tuple(precisions),
        units=units,
    )


def _traced_copy(
    model: nn.Module, example_input: torch.Tensor, ignore: Sequence[str], criterion: str
) -> tuple[nn.Module, dict[str, nn.Module], tp.DependencyGraph]:
    """An eval-mode copy of ``model``, its modules by name and its dependency graph (with
    gradients in place when the criterion needs them)."""
    work = copy.deepcopy(model).eval()
    modules = dict(work.named_modules())
    missing = [n for n in ignore if n not in modules]
    if missing:
        raise SpaceError(f"ignore: no module named {missing[0]!r} in {type(model).__name__}")
    dg = trace_graph(work, example_input)
    if needs_gradients(criterion):
        ensure_gradients(work, example_input)
    return work, modules, dg


def _prunable_groups(
    model: nn.Module,
    dg: tp.DependencyGraph,
    modules: dict[str, nn.Module],
    ignore: Sequence[str],
    example_input: torch.Tensor,
) -> list[tuple[str, Any]]:
    """(root name, group) of every group that can really be pruned, in network order (the order
    AMC's agent walks them), not graph-discovery order; a SpaceError when there is none."""
    order = {name: i for i, name in enumerate(modules)}
    raw = sorted(iter_groups(dg, [modules[n] for n in ignore]), key=lambda item: order[item[0]])
    unprunable = _probe(model, [(n, len(g[0].idxs)) for n, g in raw], example_input)
    raw = [(n, g) for n, g in raw if n not in unprunable]
    if not raw:
        raise SpaceError(
            f"{type(model).__name__} has no prunable channel group: every conv/linear Torch-Pruning "
            "traced reaches the output, is ignored, or breaks when pruned (a forward pass that "
            "leaves autograd, e.g. through numpy, hides layers from the tracer)"
        )
    return raw


@dataclass
class _ChannelRoles:
    """Which group each layer's channels belong to, read from the groups' dependencies."""

    owners: dict[str, str] = field(default_factory=dict)  # layer -> the group owning its outputs
    in_parts: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # layer -> (group, inputs)
    param_groups: dict[str, str] = field(default_factory=dict)  # free parameter -> its group
    members: dict[str, list[nn.Module]] = field(default_factory=dict)  # group -> its modules


def _channel_roles(dg: tp.DependencyGraph, work: nn.Module, raw: list[tuple[str, Any]]) -> _ChannelRoles:
    roles = _ChannelRoles()
    names = dg._module2name
    param_names = {id(p): n for n, p in work.named_parameters()}
    for gname, group in raw:
        roles.members[gname] = []
        for dep, idxs in group:
            target = dep.target.module
            if isinstance(target, nn.Parameter):
                if id(target) in param_names:
                    roles.param_groups[param_names[id(target)]] = gname
                continue
            mname = names.get(target)
            if mname is None:
                continue
            roles.members[gname].append(target)
            is_conv_like = isinstance(target, _ROOT_TYPES)
            in_only = dg.is_in_channel_pruning_fn(dep.handler) and not dg.is_out_channel_pruning_fn(dep.handler)
            if is_conv_like and in_only and not _is_depthwise(target):
                roles.in_parts.setdefault(mname, []).append((gname, len(idxs)))
            elif dg.is_out_channel_pruning_fn(dep.handler) or not is_conv_like:
                roles.owners.setdefault(mname, gname)
    return roles


def _describe_group(
    index: int,
    gname: str,
    group: Any,
    root: nn.Module,
    members: list[nn.Module],
    costs: list[LayerCost],
    scorer: Any,
    dg: tp.DependencyGraph,
) -> Group:
    """The space's record of one group: shape, the costs it scales, its channels' importance
    (sorted, relative to their mean)."""
    scores = group_scores(scorer, group, gname).sort().values
    mean = float(scores.mean()) if scores.numel() else 0.0
    importance = tuple(float(s) / mean if mean > 0 else 1.0 for s in scores)
    touched = [c for c in costs if gname in c.scale_by]
    conv = root if isinstance(root, nn.modules.conv._ConvNd) else None
    return Group(
        name=gname,
        index=index,
        kind=_kind(root, members),
        channels=len(group[0].idxs),
        in_channels=_in_channels(root),
        kernel=int(conv.kernel_size[0]) if conv is not None else 1,
        stride=int(conv.stride[0]) if conv is not None else 1,
        macs=sum(c.macs for c in touched),
        params=sum(c.params for c in touched),
        layers=tuple(dict.fromkeys(dg._module2name[m] for m in members)),
        importance=importance,
    )
