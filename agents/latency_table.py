"""A per-group latency table: the network's latency with one group narrowed, the others dense.

Workers measure it (``workers.latency_table``: each entry timed interleaved with the dense model,
cached by architecture signature like every latency measurement) and hand it to agents as a
value, so agents still never touch a model. Between measured widths the table is interpolated
linearly in kept channels; below the narrowest measured width it extends the last slope.

:func:`latency_cost_model` turns the table into the cost model the knapsack solves against:

    latency_ratio ≈ 1 + Σ_g (T_g(k_g) − 1) + ρ · Σ_{A,B} s_AB · (1 − f_A)(1 − f_B)

``T_g`` is the table (its single-group effects are measured, not modelled); the second sum is the
interaction the table cannot see — a layer scaled by two groups loses ``f_A·f_B`` of its work,
more than the two single-group effects add up to — priced at the table's own time per MAC
(``ρ``, fitted through the origin over every entry) on the MACs share ``s_AB`` of such layers.
Without a table, ``T_g`` is the MACs ratio with g narrowed and ``ρ = 1``: the model is then the
exact analytic MACs ratio (the MACs-proportional prior every agent starts from).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from search_spaces.space import SearchSpace


@dataclass(frozen=True)
class LatencyTableRequest:
    """What an agent asks workers to measure: each group at these pruning ratios, others dense."""

    ratios: tuple[float, ...] = (0.4, 0.8)

    def __post_init__(self) -> None:
        if not self.ratios or any(not 0 < r <= 1 for r in self.ratios):
            raise ValueError(f"latency table ratios must be in (0, 1], got {self.ratios!r}")


@dataclass(frozen=True)
class LatencyTable:
    """Measured latency ratios (over dense) with one group at ``kept`` channels, others dense.

    ``entries[group]`` holds ``(kept, ratio)`` pairs; the dense point ``(channels, 1.0)`` is
    implied. ``dense_ms`` is the dense model's median in the same session.
    """

    dense_ms: float
    entries: Mapping[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)

    def ratio(self, space: SearchSpace, group: str, kept: int) -> float:
        """Interpolated latency ratio with ``group`` at ``kept`` channels and the rest dense."""
        n = space.group(group).channels
        pts = sorted({int(k): float(r) for k, r in self.entries.get(group, ())}.items())
        pts = [p for p in pts if p[0] < n] + [(n, 1.0)]
        if len(pts) == 1:
            return 1.0
        if kept <= pts[0][0]:  # below the narrowest measurement: extend its slope
            (k0, r0), (k1, r1) = pts[0], pts[1]
            return r0 - (r1 - r0) / (k1 - k0) * (k0 - kept)
        for (k0, r0), (k1, r1) in zip(pts, pts[1:], strict=False):
            if kept <= k1:
                return r0 + (r1 - r0) * (kept - k0) / (k1 - k0)
        return 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"dense_ms": self.dense_ms, "entries": {g: [list(e) for e in v] for g, v in self.entries.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        entries = {g: tuple((int(k), float(r)) for k, r in v) for g, v in data.get("entries", {}).items()}
        return cls(dense_ms=float(data["dense_ms"]), entries=entries)


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


def analytic_cost_model(space: SearchSpace, attr: str) -> CostModel:
    """The space's own MACs (``attr="macs"``) or params model, as a ratio of the dense total."""
    dense = space.dense_macs if attr == "macs" else space.dense_params
    levels = {g.name: space.levels(g) for g in space.groups}
    model = CostModel(levels, linear={g: [0.0] * len(lv) for g, lv in levels.items()})
    for c in space.costs:
        share = getattr(c, attr) / dense
        if not c.scale_by:
            model.const += share
        elif (pair := _pair(c.scale_by)) is None:
            g = c.scale_by[0]
            n = space.group(g).channels
            for i, k in enumerate(levels[g]):
                model.linear[g][i] += share * k / n
        else:
            model.pairs[pair] = model.pairs.get(pair, 0.0) + share
    return _fold_self_pairs(space, model)


def _fold_self_pairs(space: SearchSpace, model: CostModel) -> CostModel:
    """A cost scaled twice by one group (f_g²) is linear in the group's one-hot level."""
    for a, b in [p for p in model.pairs if p[0] == p[1]]:
        c, n = model.pairs.pop((a, b)), space.group(a).channels
        model.linear[a] = [v + c * (k / n) ** 2 for v, k in zip(model.linear[a], model.levels[a], strict=True)]
    return model


def single_group_macs_ratio(space: SearchSpace, group: str, kept: int) -> float:
    """The MACs ratio with ``group`` at ``kept`` channels and every other group dense."""
    return space.macs_ratio({group: space.ratio_for(group, kept)})


def time_per_mac(space: SearchSpace, table: LatencyTable) -> float:
    """ρ: the latency saved per MACs share saved, over every table entry (through the origin)."""
    num = den = 0.0
    for g, entries in table.entries.items():
        for k, r in entries:
            dm = 1.0 - single_group_macs_ratio(space, g, int(k))
            num += (1.0 - r) * dm
            den += dm * dm
    return min(2.0, max(0.0, num / den)) if den > 0 else 1.0


def latency_cost_model(space: SearchSpace, table: LatencyTable | None) -> CostModel:
    """The latency ratio model of the module docstring (the exact MACs ratio when no table)."""
    levels = {g.name: space.levels(g) for g in space.groups}
    rho = 1.0 if table is None else time_per_mac(space, table)
    pair_share: dict[tuple[str, str], float] = {}
    for c in space.costs:
        if (pair := _pair(c.scale_by)) is not None:
            pair_share[pair] = pair_share.get(pair, 0.0) + c.macs / space.dense_macs
    model = CostModel(levels, const=1.0)
    for g, lv in levels.items():
        if table is None:
            single = [single_group_macs_ratio(space, g, k) for k in lv]
        else:
            single = [table.ratio(space, g, k) for k in lv]
        model.linear[g] = [s - 1.0 for s in single]
    # ρ s (1 − f_A)(1 − f_B) = ρ s (1 − f_A − f_B + f_A f_B)
    for (a, b), s in pair_share.items():
        w = rho * s
        model.const += w
        for g in (a, b):
            n = space.group(g).channels
            model.linear[g] = [v - w * k / n for v, k in zip(model.linear[g], levels[g], strict=True)]
        model.pairs[(a, b)] = model.pairs.get((a, b), 0.0) + w
    return _fold_self_pairs(space, model)
