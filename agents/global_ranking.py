"""``global``: Torch-Pruning's global ranking, its ratio bisected to the budget.

Torch-Pruning's ``global_pruning=True`` ranks every channel of every group by one importance
score and removes the lowest ones network-wide. The SearchSpace carries each group's channel
importances (ascending, normalised by the group's mean, as Torch-Pruning normalises them), so
the same allocation is computed here without a model: prune every channel whose score is below
a threshold, bisect the threshold to the budget, round, then fill the leftover. It is the
zero-search answer a Torch-Pruning user already has; the agent proposes it after the baselines,
as one more zero-search role: measured off a latency budget (over it, or far under it), it is
placed again by the refitted latency model like the baselines are (the first placement comes
from a model that has measured little: over the budget, the job could only ship the uniform-fill
baseline; far under it, the ranking would be compared at a cost nobody asked for).
"""

from __future__ import annotations

import bisect
from typing import Any

from agents.base import Agent
from agents.budget_fit import BudgetFit
from agents.types import Budget, Outcome, Proposal
from search_spaces.space import Group, Policy, SearchSpace


def global_policy(space: SearchSpace, fit: Any, *, fill: bool = True) -> Policy:
    """The least-pruning global threshold policy that fits the budget (``fit``: a BudgetFit)."""

    def scores(g: Group) -> list[float]:
        # No importances recorded (a hand-built space): all channels equal, i.e. uniform.
        return list(g.importance) if len(g.importance) == g.channels else [1.0] * g.channels

    table = {g.name: sorted(scores(g)) for g in space.groups}

    def at(threshold: float) -> Policy:
        policy: Policy = {}
        for g in space.groups:
            below = bisect.bisect_left(table[g.name], threshold)
            policy[g.name] = min(space.max_ratio, below / g.channels)
        return policy

    top = max(max(s) for s in table.values()) + 1.0
    if fit.fits(at(0.0)):
        chosen = at(0.0)
    else:
        lo, hi = 0.0, top  # pruning grows with the threshold: the smallest feasible one
        for _ in range(50):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if fit.fits(at(mid)) else (mid, hi)
        chosen = at(hi)
    policy = space.round(chosen)
    if not fit.fits(policy):  # ties at max_ratio can leave it short: project (keeps the shape)
        return fit.project(policy, fill=fill)
    return fit.fill(policy) if fill else policy


class GlobalAgent(Agent):
    """Proposes the baselines, then the global-ranking policy (placed again while it measures
    off a latency budget, at most ``BASELINE_REFITS`` times); then it is done."""

    name = "global"

    def __init__(self, space: SearchSpace, budget: Budget, *, seed: int = 0, fill: bool = True) -> None:
        super().__init__(space, budget, seed=seed)
        self.fill = fill

    def baselines(self) -> list[str]:
        return [*super().baselines(), "global"]

    def _baseline_policy(self, role: str, fit: BudgetFit | None = None) -> Policy:
        if role == "global":
            return global_policy(self.space, fit or self.fit, fill=self.fill)
        return super()._baseline_policy(role, fit)

    @property
    def finished(self) -> bool:
        return (self.baselines_done and not self._refits_due and not self._pending
                and not self.has_replay)

    def propose(self, n: int) -> list[Proposal]:
        return []  # every policy it has is a zero-search role

    def observe(self, outcomes: list[Outcome]) -> None:
        """A zero-search allocation learns nothing."""
