"""A per-group latency table: the network's latency with one group narrowed, the others dense.

Workers measure it (``workers.latency_table``: each entry timed interleaved with the dense model,
cached by architecture signature like every latency measurement) and hand it to agents as a
value, so agents still never touch a model.

The entries are measured points, not a model. Summing them (latency ≈ 1 + Σ_g (T_g(k_g) − 1))
adds the noise of every entry: on resnet56 one of 30 groups at half width moves latency by 1–3 %,
about the spread of one measurement, and that sum missed the measured latency of multi-group
policies by 0.08–0.19 (docs/benchmarks.md, "Knapsack under a latency budget"). So the knapsack
fits ``agents.budget_fit.LatencyModel`` (latency ≈ a + b·MACs + per-group corrections, ridge
regression shrunk toward MACs-proportional) to the table's points and then to every measured
outcome: the fit pools all entries into the overall slope, interpolates between and beyond the
measured widths, and learns the shape where the search goes. :func:`latency_cost_model` writes
that fit in the form the MILP solves against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from search_spaces.space import LayerCost, SearchSpace

if TYPE_CHECKING:  # budget_fit imports agents.types, which imports this module
    from agents.budget_fit import LatencyModel


@dataclass(frozen=True)
class LatencyTableRequest:
    """What an agent asks workers to measure: each group at these pruning ratios, others dense."""

    ratios: tuple[float, ...] = (0.25, 0.5, 0.75)

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

    def points(self, space: SearchSpace) -> list[tuple[dict[str, float], float]]:
        """Every entry as ``(policy, latency ratio)``: one group narrowed, the rest dense."""
        return [
            ({group: space.ratio_for(group, int(kept))}, float(ratio))
            for group, entries in self.entries.items()
            for kept, ratio in entries
        ]

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
