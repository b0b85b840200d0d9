"""The reference agents: ``uniform`` (the baseline every agent proposes first) and ``random``.

Like Optuna's ``RandomSampler`` they are short on purpose: the oracle other agents are tested
against and the floor they must beat.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agents.base import Agent
from agents.types import Budget, Outcome, Proposal
from search_spaces.space import SearchSpace


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A numpy Generator's state as JSON (PCG64's state is plain ints)."""
    return dict(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = state


class UniformAgent(Agent):
    """One ratio for every group, bisected to the budget, then filled: a single proposal (with
    int8 in the space, the int8 baselines beside it)."""

    name = "uniform"

    @property
    def finished(self) -> bool:
        return self.baseline_trial_id is not None and self.baselines_done and not self.has_replay

    def propose(self, n: int) -> list[Proposal]:
        return []  # the baseline ``ask`` makes is this agent's only proposal

    def observe(self, outcomes: list[Outcome]) -> None:
        """Nothing to learn."""


class RandomAgent(Agent):
    """Per-group ratios drawn uniformly in [0, max_ratio], projected onto the budget.

    The projection keeps the draw's shape (which groups are pruned harder) and fills leftover
    budget, so every proposal is feasible and uses the budget; Distiller found this already
    finds many good networks, which is why every searching agent must beat it.

    In a space with depth each unit is removed on its own coin of probability ``remove_p`` (by
    default a quarter, raised to 1/units so that at least one removal is expected, at most a
    half: a modest cut, the widths taking the rest of the budget); the projection moves the
    widths only, the removals stay.
    """

    name = "random"

    def __init__(self, space: SearchSpace, budget: Budget, *, seed: int = 0, remove_p: float | None = None) -> None:
        super().__init__(space, budget, seed=seed)
        units = len(space.units)
        if remove_p is None:
            remove_p = min(0.5, max(0.25, 1 / units)) if units else 0.0
        if isinstance(remove_p, bool) or not isinstance(remove_p, int | float) or not 0 <= remove_p <= 1:
            raise ValueError(f"options.remove_p must be a number in [0, 1], got {remove_p!r}")
        self.remove_p = float(remove_p)
        self._rng = np.random.default_rng(seed)

    def propose(self, n: int) -> list[Proposal]:
        out: list[Proposal] = []
        while len(out) < n:
            raw = self._rng.uniform(0.0, self.space.max_ratio, size=len(self.space))
            policy = dict(zip(self.space.names, raw.tolist(), strict=True))
            if self.space.quantizable:  # each group's precision a fair coin
                int8 = self._rng.random(len(self.space)) < 0.5
                policy = self.space.with_int8(policy, [n for n, q in zip(self.space.names, int8, strict=True) if q])
            if self.space.depth:  # each unit removed on its own coin
                coins = self._rng.random(len(self.space.units)) < self.remove_p
                policy = self.space.with_removed(policy, [u.name for u, c in zip(self.space.units, coins, strict=True) if c])
            out.append(self._proposal(self.fit.project(policy)))
        return out

    def observe(self, outcomes: list[Outcome]) -> None:
        """Random search learns nothing."""

    def extra_state(self) -> dict[str, Any]:
        return {"rng": rng_state(self._rng)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "rng" in state:
            set_rng_state(self._rng, state["rng"])
