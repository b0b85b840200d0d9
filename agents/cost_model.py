"""The knapsack's cost models: MACs, params and modelled latency as functions of kept channels
(and, in a space with int8, of each group's precision).

Each is ``const + Σ_g linear[g][option] + Σ_(A,B) pairs[(A,B)] · f_A · f_B``, the form
``agents.knapsack_solve`` linearises into its MILP. A group's options are its kept-channel levels,
fp32, then (in a space with int8) the same levels in int8; an assignment is a kept-channel dict with
``bits_key(group): 8`` for its int8 groups (the policy's own convention). A pair's coefficient may
depend on the two groups' precisions (``pair_int8``). The analytic ones come from the space's own
per-layer costs (int8 changes no MAC); the latency one from ``agents.budget_fit.LatencyModel``,
fitted to a measured ``agents.latency_table.LatencyTable`` and to outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agents.budget_fit import LatencyModel
from search_spaces.space import PRECISION_BITS, LayerCost, SearchSpace, bits_key

_EIGHT = PRECISION_BITS["int8"]


def option_levels(space: SearchSpace) -> dict[str, list[int]]:
    """Each group's kept-channel options in the knapsack: its levels and, for a group inside a
    removable unit (a space with depth), 0 first: the unit removed. Every layer the group scales
    then costs nothing (f = 0), so MACs, params and the latency model's per-layer terms vanish
    with no new variable; the unit's own latency term sits on its anchor group's 0 option."""
    inside = {g for u in space.units for g in u.groups}
    return {g.name: [0, *space.levels(g)] if g.name in inside else space.levels(g) for g in space.groups}


def unit_anchors(space: SearchSpace) -> dict[str, str]:
    """Per unit with groups inside it, the group whose 0 option carries the unit's own terms
    (its first). A unit with no group inside it cannot be removed by the knapsack."""
    return {u.name: u.groups[0] for u in space.units if u.groups}


def is_int8(assignment: Mapping[str, float], group: str) -> bool:
    """Whether ``assignment`` (kept channels or a policy) runs ``group`` in int8."""
    return assignment.get(bits_key(group)) == _EIGHT


@dataclass
class CostModel:
    """``const + Σ_g linear[g][option] + Σ_(A,B) pair coefficient · f_A · f_B`` over options.

    ``levels[g]`` are the group's kept counts (``space.levels``); option ``i`` is level
    ``i % len(levels[g])``, in int8 from ``len(levels[g])`` on (only when ``int8``); ``f_g`` =
    kept / channels. ``pair_int8[(A,B)]`` holds the pair's coefficient with A alone, B alone and
    both in int8 (``pairs`` is the fp32 one). The coefficients are non-negative.
    """

    levels: dict[str, list[int]]
    const: float = 0.0
    linear: dict[str, list[float]] = field(default_factory=dict)
    pairs: dict[tuple[str, str], float] = field(default_factory=dict)
    int8: bool = False
    pair_int8: dict[tuple[str, str], tuple[float, float, float]] = field(default_factory=dict)

    def option(self, group: str, assignment: Mapping[str, float]) -> int:
        """The option index of ``group`` in ``assignment``."""
        i = self.levels[group].index(int(assignment[group]))
        return i + len(self.levels[group]) if self.int8 and is_int8(assignment, group) else i

    def pair_coef(self, pair: tuple[str, str], qa: bool, qb: bool) -> float:
        if (qa or qb) and pair in self.pair_int8:
            return self.pair_int8[pair][0 if not qb else 1 if not qa else 2]
        return self.pairs[pair]

    def value(self, space: SearchSpace, kept: Mapping[str, float]) -> float:
        v = self.const
        for g in self.levels:
            v += self.linear[g][self.option(g, kept)]
        for (a, b) in self.pairs:
            c = self.pair_coef((a, b), self.int8 and is_int8(kept, a), self.int8 and is_int8(kept, b))
            v += c * kept[a] / space.group(a).channels * kept[b] / space.group(b).channels
        return v


def _pair(scale_by: tuple[str, ...]) -> tuple[str, str] | None:
    """The two groups a cost's product is taken over; costs scaled by three or more groups are
    bounded by the product of two (an over-estimate, so a solution stays within budget)."""
    return (scale_by[0], scale_by[1]) if len(scale_by) >= 2 else None


#: a layer's cost per unit of its scaled share, given which of its scaling groups run in int8
LayerShare = Callable[[LayerCost, frozenset[str]], float]


def cost_model(space: SearchSpace, share: LayerShare, const: float = 0.0,
               int8_group: Callable[[str], float] | None = None,
               unit_term: Callable[[str], float] | None = None) -> CostModel:
    """``const + Σ_layers share(layer, its int8 groups) · Π f_g`` over the layer's scaling groups,
    plus ``int8_group(g)`` per group g in int8 and ``unit_term(u)`` per removed unit, as a
    CostModel (with int8 options in a space with int8, removal options in a space with depth).

    A layer scaled by more groups than the pair the product is taken over is bounded by the
    larger of its cost with those extra groups all fp32 or all int8 (the share is linear in how
    many are int8). A removed unit's layers scaled by none of its own groups (a norm after the
    residual add, say) stay counted: an over-estimate, so a solution stays within budget."""
    int8 = space.quantizable
    levels = option_levels(space)
    model = CostModel(levels, const=const, int8=int8,
                      linear={g: [0.0] * (len(lv) * (2 if int8 else 1)) for g, lv in levels.items()})

    def bound(c: LayerCost, eight: frozenset[str]) -> float:
        rest = frozenset(c.scale_by[2:])
        return max(share(c, eight), share(c, eight | rest)) if rest and int8 else share(c, eight)

    for c in space.costs:
        if not c.scale_by:
            model.const += share(c, frozenset())
        elif (pair := _pair(c.scale_by)) is None:
            g = c.scale_by[0]
            n = space.group(g).channels
            for q in (False, True) if int8 else (False,):
                w = share(c, frozenset({g}) if q else frozenset())
                for i, k in enumerate(levels[g]):
                    model.linear[g][i + (len(levels[g]) if q else 0)] += w * k / n
        else:
            a, b = pair
            model.pairs[pair] = model.pairs.get(pair, 0.0) + bound(c, frozenset())
            if int8:
                old = model.pair_int8.get(pair, (0.0, 0.0, 0.0))
                new = (bound(c, frozenset({a})), bound(c, frozenset({b})), bound(c, frozenset({a, b})))
                model.pair_int8[pair] = (old[0] + new[0], old[1] + new[1], old[2] + new[2])
    if int8 and int8_group is not None:
        for g, lv in levels.items():
            extra = int8_group(g)
            for i in range(len(lv), 2 * len(lv)):
                model.linear[g][i] += extra
    if unit_term is not None:
        for unit, g in unit_anchors(space).items():
            term = unit_term(unit)
            for i in (0, len(levels[g])) if int8 else (0,):  # the 0 option (its int8 twin is never chosen)
                model.linear[g][i] += term
    return _fold_self_pairs(space, model)


def analytic_cost_model(space: SearchSpace, attr: str) -> CostModel:
    """The space's own MACs (``attr="macs"``) or params model, as a ratio of the dense total."""
    dense = space.dense_macs if attr == "macs" else space.dense_params
    return cost_model(space, lambda c, _int8: getattr(c, attr) / dense)


def latency_cost_model(space: SearchSpace, model: LatencyModel) -> CostModel:
    """``model``'s prediction as a CostModel (exact: its features are per-layer MACs shares, the
    int8 MACs share, the count of int8 groups and each group's own int8 term; with depth, the
    units' removal terms, and a removed unit's layers as in ``cost_model``).

    A layer's weight is clipped at 0 — a narrower layer is never modelled slower — which also
    keeps the bound on layers scaled by three or more groups an over-estimate.
    """
    return cost_model(
        space, lambda c, int8: max(0.0, c.macs / space.dense_macs * model.layer_weight(c.scale_by, int8)),
        const=model.overhead, int8_group=model.int8_group_cost,
        unit_term=model.unit_cost if space.depth else None,
    )


def _fold_self_pairs(space: SearchSpace, model: CostModel) -> CostModel:
    """A cost scaled twice by one group (f_g²) is linear in the group's one-hot option."""
    for a, b in [p for p in model.pairs if p[0] == p[1]]:
        n, lv = space.group(a).channels, model.levels[a]
        for i in range(len(model.linear[a])):
            q = i >= len(lv)
            model.linear[a][i] += model.pair_coef((a, b), q, q) * (lv[i % len(lv)] / n) ** 2
        model.pairs.pop((a, b))
        model.pair_int8.pop((a, b), None)
    return model
