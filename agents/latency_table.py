"""A per-group latency table: the network's latency with one group narrowed, the others dense.

Workers measure it (``workers.latency_table``: each entry timed interleaved with the dense model,
cached by architecture signature like every latency measurement) and hand it to agents as a
value, so agents still never touch a model.

The entries are measured points, not a model. Summing them (latency ≈ 1 + Σ_g (T_g(k_g) − 1))
adds the noise of every entry: one group's effect is about the spread of one measurement, and
that sum missed the measured latency of multi-group policies (docs/benchmarks.md, "Knapsack under
a latency budget" and "The latency model refitted"). So the knapsack
fits ``agents.budget_fit.LatencyModel`` (latency ≈ a + b·MACs + per-group corrections, ridge
regression shrunk toward MACs-proportional) to the table's points and then to every measured
outcome: the fit pools all entries into the overall slope, interpolates between and beyond the
measured widths, and learns the shape where the search goes. ``agents.cost_model`` writes that
fit in the form the MILP solves against.

This module holds values only (what workers measure and agents read); the cost models built
from them live in ``agents.cost_model``, so ``agents.types`` can name a table without importing
the knapsack's fitting code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from search_spaces.space import SearchSpace, bits_key, keep_key


@dataclass(frozen=True)
class LatencyTableRequest:
    """What an agent asks workers to measure: each group at these pruning ratios, others dense
    (in a space with int8 also each group in int8, unpruned and at the middle of these widths,
    others dense fp32: the table's ``int8`` entries; in a space with depth also each unit removed,
    the rest dense: its ``removed`` entries)."""

    ratios: tuple[float, ...] = (0.25, 0.5, 0.75)

    def __post_init__(self) -> None:
        if not self.ratios or any(not 0 < r <= 1 for r in self.ratios):
            raise ValueError(f"latency table ratios must be in (0, 1], got {self.ratios!r}")


@dataclass(frozen=True)
class LatencyTable:
    """Measured latency ratios (over dense fp32) with one group at ``kept`` channels, others dense.

    ``entries[group]`` holds ``(kept, ratio)`` pairs, the group fp32; the dense point
    ``(channels, 1.0)`` is implied. ``int8[group]`` (a space with int8 only) holds ``(kept,
    ratio)`` pairs with the group in int8 at ``kept`` channels (``channels`` among them: int8
    alone), every other group dense fp32 — where int8 pays and where, on narrow layers, its
    quantize/dequantize overhead makes it slower. ``removed[unit]`` (a space with depth only) is
    the ratio with that block or layer removed, the rest dense fp32: what removal saves, fixed
    costs included, which narrowing cannot show. ``dense_ms`` is the dense model's median in the
    same session.
    """

    dense_ms: float
    entries: Mapping[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)
    int8: Mapping[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)
    removed: Mapping[str, float] = field(default_factory=dict)

    def points(self, space: SearchSpace) -> list[tuple[dict[str, float], float]]:
        """Every entry as ``(policy, latency ratio)``: one group narrowed (or in int8), or one unit
        removed, the rest dense fp32."""
        fp32 = [
            ({group: space.ratio_for(group, int(kept))}, float(ratio))
            for group, entries in self.entries.items()
            for kept, ratio in entries
        ]
        int8 = [
            ({group: space.ratio_for(group, int(kept)), bits_key(group): 8.0}, float(ratio))
            for group, entries in self.int8.items()
            for kept, ratio in entries
        ]
        removed = [({keep_key(unit): 0.0}, float(ratio)) for unit, ratio in self.removed.items()]
        return fp32 + int8 + removed

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dense_ms": self.dense_ms,
                               "entries": {g: [list(e) for e in v] for g, v in self.entries.items()}}
        if self.int8:
            out["int8"] = {g: [list(e) for e in v] for g, v in self.int8.items()}
        if self.removed:
            out["removed"] = dict(self.removed)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        def rows(part: Mapping[str, Any]) -> dict[str, tuple[tuple[int, float], ...]]:
            return {g: tuple((int(k), float(r)) for k, r in v) for g, v in part.items()}

        return cls(dense_ms=float(data["dense_ms"]), entries=rows(data.get("entries", {})),
                   int8=rows(data.get("int8", {})),
                   removed={u: float(r) for u, r in data.get("removed", {}).items()})
