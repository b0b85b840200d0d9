"""Pareto fronts as small pure functions: quality up, cost down, constraints first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    """One evaluated policy seen by the front: higher quality and lower cost are better.

    ``violation`` is the largest budget violation (<= 0 when feasible).
    """

    quality: float
    cost: float
    violation: float = 0.0

    @property
    def feasible(self) -> bool:
        return self.violation <= 1e-9


def dominates(a: Point, b: Point) -> bool:
    """Constraint-domination (Deb 2000): feasible beats infeasible; among infeasible the smaller
    violation wins; among feasible, Pareto dominance on (quality up, cost down)."""
    if a.feasible != b.feasible:
        return a.feasible
    if not a.feasible:
        return a.violation < b.violation
    return a.quality >= b.quality and a.cost <= b.cost and (a.quality > b.quality or a.cost < b.cost)


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points, ordered by cost ascending (ties: quality descending).

    Duplicates of a front point (equal quality and cost) are kept once, the first seen.
    """
    order = sorted(range(len(points)), key=lambda i: (not points[i].feasible, points[i].cost, -points[i].quality))
    front: list[int] = []
    for i in order:
        p = points[i]
        if any(dominates(points[j], p) or (points[j] == p) for j in front):
            continue
        front = [j for j in front if not dominates(p, points[j])]
        front.append(i)
    return sorted(front, key=lambda i: (points[i].cost, -points[i].quality))


def hypervolume_2d(points: Sequence[Point], ref_quality: float, ref_cost: float) -> float:
    """Area dominated by the feasible points, bounded by (ref_quality, ref_cost)."""
    pts = sorted(
        (p for p in points if p.feasible and p.quality > ref_quality and p.cost < ref_cost),
        key=lambda p: p.cost,
    )
    area, best_q = 0.0, ref_quality
    for k, p in enumerate(pts):
        best_q = max(best_q, p.quality)
        next_cost = pts[k + 1].cost if k + 1 < len(pts) else ref_cost
        area += (next_cost - p.cost) * (best_q - ref_quality)
    return area
