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

from search_spaces.space import SearchSpace


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
