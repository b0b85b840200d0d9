"""``global``: Torch-Pruning's global ranking, its ratio bisected to the budget.

Torch-Pruning's ``global_pruning=True`` ranks every channel of every group by one importance
score and removes the lowest ones network-wide. The SearchSpace carries each group's channel
importances (ascending, normalised by the group's mean, as Torch-Pruning normalises them), so
the same allocation is computed here without a model: prune every channel whose score is below
a threshold, bisect the threshold to the budget, round, then fill the leftover. It is the
zero-search answer a Torch-Pruning user already has; the agent proposes the baseline and it.
"""

from __future__ import annotations

import bisect
from typing import Any

from agents.base import Agent
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
    """Proposes the uniform-fill baseline, then the global-ranking policy; then it is done."""

    name = "global"

    def __init__(self, space: SearchSpace, budget: Budget, *, seed: int = 0, fill: bool = True) -> None:
        super().__init__(space, budget, seed=seed)
        self.fill = fill
        self._done = False  # the global policy was proposed (after the baseline)

    @property
    def finished(self) -> bool:
        return self._done and not self.has_replay

    def propose(self, n: int) -> list[Proposal]:
        if self._done:
            return []
        self._done = True
        return [self._proposal(global_policy(self.space, self.fit, fill=self.fill), role="global")]

    def observe(self, outcomes: list[Outcome]) -> None:
        """A zero-search allocation learns nothing."""

    def extra_state(self) -> dict[str, Any]:
        return {"done": self._done}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._done = bool(state.get("done", False))
