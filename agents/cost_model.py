"""The knapsack's cost models: MACs, params and modelled latency as functions of kept channels.

Each is ``const + Σ_g linear[g][level] + Σ_(A,B) pairs[(A,B)] · f_A · f_B``, the form
``agents.knapsack_solve`` linearises into its MILP. The analytic ones come from the space's own
per-layer costs; the latency one from ``agents.budget_fit.LatencyModel``, fitted to a measured
``agents.latency_table.LatencyTable`` and to outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agents.budget_fit import LatencyModel
from search_spaces.space import LayerCost, SearchSpace


@dataclass
class CostModel:
    """``const + Σ_g linear[g][level] + Σ_(A,B) pairs[(A,B)] · f_A · f_B`` over kept-channel levels.

    ``levels[g]`` are the group's kept counts (``space.levels``); ``f_g`` = kept / channels. Pair
    coefficients are non-negative, which is what lets the MILP linearise the products exactly.
    """

    levels: dict[str, list[int]]
    const: float = 0.0
    linear: dict[str, list[float]] = field(default_factory=dict)
    pairs: dict[tuple[str, str], float] = field(default_factory=dict)

    def value(self, space: SearchSpace, kept: Mapping[str, int]) -> float:
        v = self.const
        for g, lv in self.levels.items():
            v += self.linear[g][lv.index(kept[g])]
        for (a, b), c in self.pairs.items():
            v += c * kept[a] / space.group(a).channels * kept[b] / space.group(b).channels
        return v


def _pair(scale_by: tuple[str, ...]) -> tuple[str, str] | None:
    """The two groups a cost's product is taken over; costs scaled by three or more groups are
    bounded by the product of two (an over-estimate, so a solution stays within budget)."""
    return (scale_by[0], scale_by[1]) if len(scale_by) >= 2 else None


def cost_model(space: SearchSpace, share: Callable[[LayerCost], float], const: float = 0.0) -> CostModel:
    """``const + Σ_layers share(layer) · Π f_g`` over the layer's scaling groups, as a CostModel."""
    levels = {g.name: space.levels(g) for g in space.groups}
    model = CostModel(levels, const=const, linear={g: [0.0] * len(lv) for g, lv in levels.items()})
    for c in space.costs:
        w = share(c)
        if not c.scale_by:
            model.const += w
        elif (pair := _pair(c.scale_by)) is None:
            g = c.scale_by[0]
            n = space.group(g).channels
            for i, k in enumerate(levels[g]):
                model.linear[g][i] += w * k / n
        else:
            model.pairs[pair] = model.pairs.get(pair, 0.0) + w
    return _fold_self_pairs(space, model)


def analytic_cost_model(space: SearchSpace, attr: str) -> CostModel:
    """The space's own MACs (``attr="macs"``) or params model, as a ratio of the dense total."""
    dense = space.dense_macs if attr == "macs" else space.dense_params
    return cost_model(space, lambda c: getattr(c, attr) / dense)


def latency_cost_model(space: SearchSpace, model: LatencyModel) -> CostModel:
    """``model``'s prediction as a CostModel (exact: its features are per-layer MACs shares).

    A layer's weight is clipped at 0 — a narrower layer is never modelled slower — which also
    keeps the bound on layers scaled by three or more groups an over-estimate.
    """
    return cost_model(
        space, lambda c: max(0.0, c.macs / space.dense_macs * model.layer_weight(c.scale_by)), const=model.overhead
    )


def _fold_self_pairs(space: SearchSpace, model: CostModel) -> CostModel:
    """A cost scaled twice by one group (f_g²) is linear in the group's one-hot level."""
    for a, b in [p for p in model.pairs if p[0] == p[1]]:
        c, n = model.pairs.pop((a, b)), space.group(a).channels
        model.linear[a] = [v + c * (k / n) ** 2 for v, k in zip(model.linear[a], model.levels[a], strict=True)]
    return model
