"""A hand-built SearchSpace and a synthetic evaluator with known per-group sensitivities.

quality(policy) = 1 − Σ_g s_g · (1 − keep_g)^2, keep_g = kept/channels. With heterogeneous s_g
the optimum at a MACs budget prunes the insensitive groups hard and keeps the sensitive ones —
which uniform pruning cannot do — so a searching agent has something real to find.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from agents.types import Metrics, Outcome, Proposal
from search_spaces.space import Group, LayerCost, SearchSpace, Unit


def chain_space(
    channels: Sequence[int] = (16, 16, 32, 32, 64, 64), *, hw: Sequence[int] | None = None,
    max_ratio: float = 0.8, round_to: int = 4,
) -> SearchSpace:
    """A plain conv chain: stem conv (3 → c0), conv_i (c_{i-1} → c_i), a linear head (c_last → 10)."""
    n = len(channels)
    hw = list(hw) if hw is not None else [32 if i < n // 3 else 16 if i < 2 * n // 3 else 8 for i in range(n)]
    groups, costs = [], []
    for i, c in enumerate(channels):
        cin = 3 if i == 0 else channels[i - 1]
        macs = cin * c * 9 * hw[i] * hw[i]
        params = cin * c * 9 + 2 * c
        costs.append(LayerCost(f"conv{i}", macs, cin * c * 9, (f"conv{i}",) if i == 0 else (f"conv{i - 1}", f"conv{i}")))
        costs.append(LayerCost(f"bn{i}", 0, 2 * c, (f"conv{i}",)))
        stride = 2 if i > 0 and hw[i] < hw[i - 1] else 1
        imp = tuple(sorted(np.random.default_rng(i).gamma(2.0, size=c) / 2.0))
        groups.append(Group(f"conv{i}", i, "conv", c, cin, 3, stride, macs, params, (f"conv{i}", f"bn{i}"), importance=imp))
    costs.append(LayerCost("fc", channels[-1] * 10, channels[-1] * 10 + 10, (f"conv{n - 1}",)))
    return _space(groups, costs, max_ratio, round_to)


def sensitivities(space: SearchSpace, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(1000 + seed)
    return {g.name: float(s) for g, s in zip(space.groups, np.exp(rng.uniform(math.log(0.01), math.log(1.0), len(space))), strict=True)}


def make_evaluator(
    space: SearchSpace, sens: dict[str, float], *, latency: bool = False, fail_every: int = 0,
    unit_sens: dict[str, float] | None = None, unit_ms: float = 0.0,
) -> Callable[[Proposal], Outcome]:
    """Proposal -> Outcome; ``fail_every`` = k fails every k-th trial id (errors are tolerated).

    In a space with depth a removed unit loses ``unit_sens[unit]`` (default: the space's
    ``unit_sensitivities``) and its groups' width terms no longer count; ``unit_ms``: a fixed
    latency per kept unit that narrowing does not remove (the per-layer overhead depth buys back).
    """
    if unit_sens is None and space.depth:
        unit_sens = unit_sensitivities(space)

    def evaluate(p: Proposal) -> Outcome:
        if fail_every and p.trial_id % fail_every == fail_every - 1:
            return Outcome(p.trial_id, p.policy, None, "synthetic failure")
        kept = space.kept(p.policy)
        gone, removed = space.removed_groups(p.policy), space.removed_units(p.policy)
        q = 1.0 - sum(s * (1 - kept[n] / space.group(n).channels) ** 2 for n, s in sens.items() if n not in gone)
        q -= sum((unit_sens or {})[u] for u in removed)
        mr = space.macs_ratio(p.policy)
        lat = 10.0 * (0.3 + 0.7 * mr) if latency else None
        if lat is not None and unit_ms:  # scaled so that the dense model still takes 10 ms
            lat = (lat + unit_ms * (len(space.units) - len(removed))) * 10.0 / (10.0 + unit_ms * len(space.units))
        m = Metrics(
            quality=q,
            macs=int(space.macs(p.policy)),
            params=int(space.params(p.policy)),
            macs_ratio=mr,
            params_ratio=space.params_ratio(p.policy),
            latency_ms=lat,
            latency_ratio=(lat / 10.0) if lat is not None else None,
        )
        return Outcome(p.trial_id, p.policy, m)

    return evaluate


def residual_space(
    stages: Sequence[int] = (16, 32, 64), blocks: int = 3, *, max_ratio: float = 0.8, round_to: int = 4,
) -> SearchSpace:
    """A CIFAR-ResNet-shaped space with depth: per stage ``blocks`` basic blocks of two 3x3 convs.

    Each stage's residual channels are one group (``s<i>``: the stem or the downsampling block's
    output and every block's second conv); each block's first conv is its own group
    (``s<i>.b<j>.conv1``). Every block with an identity shortcut (all of stage 0, all but the first
    of the others, as in resnet20) is a removable :class:`Unit` holding its first conv's group.
    """
    hw = [32 // 2**i for i in range(len(stages))]
    groups: list[Group] = []
    costs: list[LayerCost] = []
    units: list[Unit] = []

    def group(name: str, c: int, cin: int, stride: int, macs: int, params: int, layers: tuple[str, ...]) -> None:
        imp = tuple(sorted(np.random.default_rng(len(groups)).gamma(2.0, size=c) / 2.0))
        groups.append(Group(name, len(groups), "conv", c, cin, 3, stride, macs, params, layers, importance=imp))

    def conv(name: str, cin: int, cout: int, size: int, scale_by: tuple[str, ...]) -> LayerCost:
        costs.append(LayerCost(name, cin * cout * 9 * size * size, cin * cout * 9 + 2 * cout, scale_by))
        return costs[-1]

    stem = conv("stem", 3, stages[0], hw[0], ("s0",))
    stage_layers: dict[str, list[str]] = {f"s{i}": [] for i in range(len(stages))}
    stage_layers["s0"].append("stem")
    for i, c in enumerate(stages):
        cin_stage = stages[i - 1] if i else stages[0]
        for j in range(blocks):
            block = f"s{i}.b{j}"
            cin = cin_stage if j == 0 else c
            a = conv(f"{block}.conv1", cin, c, hw[i], (f"s{i - 1}" if i and j == 0 else f"s{i}", f"{block}.conv1"))
            b = conv(f"{block}.conv2", c, c, hw[i], (f"{block}.conv1", f"s{i}"))
            group(f"{block}.conv1", c, cin, 2 if i and j == 0 else 1, a.macs + b.macs, a.params + b.params,
                  (a.name, b.name))
            stage_layers[f"s{i}"].append(b.name)
            if i and j == 0:  # the downsampling block: a 1x1 shortcut, no identity
                costs.append(LayerCost(f"{block}.shortcut", cin * c * hw[i] ** 2, cin * c, (f"s{i - 1}", f"s{i}")))
                stage_layers[f"s{i}"].append(f"{block}.shortcut")
            else:
                units.append(Unit(block, len(units), "block", (f"{block}.conv1",), (a.name, b.name),
                                  a.macs + b.macs, a.params + b.params))
    costs.append(LayerCost("fc", stages[-1] * 10, stages[-1] * 10 + 10, (f"s{len(stages) - 1}",)))
    for i, c in enumerate(stages):  # the stage groups, after their blocks' (any order is a space)
        macs = sum(x.macs for x in costs if f"s{i}" in x.scale_by)
        params = sum(x.params for x in costs if f"s{i}" in x.scale_by)
        group(f"s{i}", c, stages[i - 1] if i else 3, 2 if i else 1, macs, params, tuple(stage_layers[f"s{i}"]))
    del stem
    return _space(groups, costs, max_ratio, round_to, units)


def unit_sensitivities(space: SearchSpace, seed: int = 0) -> dict[str, float]:
    """Quality lost by removing each unit: log-uniform in [0.005, 0.3] (some blocks nearly free)."""
    rng = np.random.default_rng(2000 + seed)
    lo, hi = math.log(0.005), math.log(0.3)
    return {u.name: float(np.exp(rng.uniform(lo, hi))) for u in space.units}


def _space(groups: list[Group], costs: list[LayerCost], max_ratio: float, round_to: int,
           units: list[Unit] | tuple[Unit, ...] = ()) -> SearchSpace:
    """A 32×32 RGB space of these groups and costs (dense totals summed from the costs)."""
    return SearchSpace(
        groups=tuple(groups),
        costs=tuple(costs),
        dense_macs=int(sum(c.macs for c in costs)),
        dense_params=int(sum(c.params for c in costs)),
        input_shape=(3, 32, 32),
        max_ratio=max_ratio,
        round_to=round_to,
        units=tuple(units),
    )
