"""Measuring a per-group latency table on this worker (``agents.latency_table.LatencyTable``).

Entry (g, k): the network with group g pruned to k kept channels and every other group dense,
timed interleaved with the dense model by the evaluator's ``LatencyMeter`` — so each entry is an
ordinary latency measurement: cached by architecture signature (in memory and in the node's
latency cache file, shared with evaluations and across restarts) and taken with the node held
exclusively. Only the architecture matters for latency, so the policy is applied the model
kind's way (``Evaluator.shrink``) with no recovery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from agents.latency_table import LatencyTable
from search_spaces.space import SearchSpace

if TYPE_CHECKING:
    from workers.evaluator import Evaluator


def table_policies(space: SearchSpace, ratios: Sequence[float]) -> dict[str, list[dict[str, float]]]:
    """Per group, the distinct single-group policies at ``ratios`` (clipped to ``max_ratio``)."""
    out: dict[str, list[dict[str, float]]] = {}
    for g in space.groups:
        seen, policies = {g.channels}, []
        for r in sorted(ratios):
            k = space.kept_channels(g, min(r, space.max_ratio))
            if k not in seen:
                seen.add(k)
                policies.append({g.name: space.ratio_for(g, k)})
        out[g.name] = policies
    return out


def measure_latency_table(evaluator: Evaluator, ratios: Sequence[float]) -> LatencyTable:
    """The table for ``evaluator``'s task at ``ratios`` (see the module docstring)."""
    space, meter = evaluator.space, evaluator.latency
    if meter.rounds < 1:
        raise ValueError("a latency table needs latency measurement, which this evaluator has off (latency_rounds=0)")
    dense = meter.measure(evaluator.dense_signature, evaluator.dense)
    entries: dict[str, tuple[tuple[int, float], ...]] = {}
    for name, policies in table_policies(space, ratios).items():
        row = []
        for policy in policies:
            signature = space.signature(policy)
            lat = meter.cached(signature)
            if lat is None:
                model = evaluator.shrink(policy)
                lat = meter.measure(signature, model)
            row.append((space.kept(policy)[name], lat.ratio))
        entries[name] = tuple(row)
    return LatencyTable(dense_ms=dense.ms, entries=entries)
