"""AMC's environment: walk the groups in order, one pruning decision per group.

Observation (11 numbers in [0, 1]): the group's static embedding — index, kind, input and output
channels, stride, kernel, MACs, params, each min-max normalised over the network — plus MACs
already removed by earlier decisions (``reduced``), MACs of the groups still to come (``rest``)
and the previous action. Action: one number in [0, 1], the fraction of ``max_ratio`` to prune.
Before it is applied it is clamped from below (``BudgetFit.min_ratio``) so the budget stays
reachable whatever later groups do; every episode therefore ends within budget.

In a space with int8 (HAQ, Wang et al., CVPR 2019, searched jointly with the width as in APQ) the
action has a second number, the group's precision (int8 from 0.5 up, fp32 below), decided before
the ratio so the clamp accounts for it (a group asked for in int8 where the latency model says
int8 would leave the budget unreachable stays fp32), and the observation a twelfth, the previous
group's precision (1: int8). An fp32 space's env is AMC's exactly as above.

In a space with depth (``search_space.depth``) the action has one more number, the removal of
the unit whose first group this step decides (from ``REMOVE_FROM`` up: removed; ignored at any
other step), decided before the width so the clamp sees it; the groups of a removed unit take no
width (their step records action 0), and the observation has one more number, 1 where the step
decides a removal. ``REMOVE_FROM`` is 0.75, so warm-up's uniform actions remove a quarter of the
units, as the ``random`` agent does. The clamp extends to depth: where the widths alone cannot
reach the budget (a latency bound below what narrowing reaches, as each layer's fixed cost
stays), it assumes the units decided later removed, and a unit the budget cannot keep is removed
whatever the action says. Spaces without depth are unchanged.

The env cannot score the pruned network (that is the workers' job, in parallel, later), so the
reward is 0 until the last step, where it is ``reward_fn(policy)`` when one is given (tests, the
synthetic evaluator) and 0 otherwise; the agent hands every transition the real reward when the
outcome is told.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from agents.budget_fit import BudgetFit
from search_spaces.space import Policy, SearchSpace

KINDS = {"conv": 1.0, "conv1d": 1.0, "depthwise": 0.5, "linear": 0.0, "attention": 0.25}
OBS_DIM = 11
#: a precision action from this value up picks int8
INT8_FROM = 0.5
#: a removal action from this value up removes the unit (a quarter of uniform draws)
REMOVE_FROM = 0.75


def obs_dim(space: SearchSpace) -> int:
    """The observation's size: AMC's, plus the previous precision in a space with int8, plus
    whether the step decides a removal in a space with depth."""
    return OBS_DIM + (1 if space.quantizable else 0) + (1 if space.depth else 0)


def action_dim(space: SearchSpace) -> int:
    """The action's size: the ratio, the precision in a space with int8, the removal in a space
    with depth."""
    return 1 + (1 if space.quantizable else 0) + (1 if space.depth else 0)


def removal_steps(space: SearchSpace) -> dict[str, str]:
    """Group -> the unit whose removal is decided at that group's step: each unit's first group
    in the walk's order."""
    order = {g.name: i for i, g in enumerate(space.groups)}
    return {min(u.groups, key=order.__getitem__): u.name for u in space.units if u.groups}


def embedding(space: SearchSpace) -> np.ndarray:
    """The static features of every group, min-max normalised over the network (groups × 8)."""
    raw = np.array(
        [
            [g.index, KINDS.get(g.kind, 0.75), g.in_channels, g.channels, g.stride, g.kernel, g.macs, g.params]
            for g in space.groups
        ],
        dtype=np.float64,
    )
    lo, hi = raw.min(axis=0), raw.max(axis=0)
    return (raw - lo) / np.where(hi > lo, hi - lo, 1.0)


class PruningEnv(gym.Env):
    """One episode = one pass over the space's groups; the final policy is in ``info``."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        space: SearchSpace,
        fit: BudgetFit,
        reward_fn: Callable[[Policy], float] | None = None,
    ) -> None:
        self.space, self.fit, self.reward_fn = space, fit, reward_fn
        self.joint = space.quantizable
        self.depth = space.depth
        self._decides = removal_steps(space)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(obs_dim(space),), dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, shape=(action_dim(space),), dtype=np.float32)
        self._emb = embedding(space)
        group_macs = np.array([g.macs for g in space.groups], dtype=np.float64)
        total = group_macs.sum() or 1.0
        self._rest = np.array([group_macs[t + 1 :].sum() / total for t in range(len(space))])
        self._t = 0
        self._decided: Policy = {}
        self._prev = 0.0
        self._prev_int8 = 0.0

    def _obs(self) -> np.ndarray:
        t = min(self._t, len(self.space) - 1)
        reduced = 1.0 - self.space.macs_ratio(self._decided) if self._decided else 0.0
        rest = self._rest[t] if self._t < len(self.space) else 0.0
        prev = [self._prev, self._prev_int8] if self.joint else [self._prev]
        if self.depth:
            decides = self._t < len(self.space) and self.space.groups[t].name in self._decides
            prev.append(1.0 if decides else 0.0)
        obs = np.concatenate([self._emb[t], [reduced, rest], prev])
        return np.clip(obs, 0.0, 1.0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t, self._decided, self._prev, self._prev_int8 = 0, {}, 0.0, 0.0
        return self._obs(), {}

    def _reachable(self, group: str, *, later_removed: bool = False) -> bool:
        """Whether the budget is met with the decided groups as they are and ``group`` and every
        later group pruned at ``max_ratio`` (``later_removed``: and every unit whose removal is
        decided after this step removed)."""
        trial = {**{n: self.space.max_ratio for n in self.space.names}, **self._decided}
        trial[group] = self.space.max_ratio
        return self.fit.fits(self._later_removed(trial) if later_removed else trial)

    def _later_removed(self, policy: Policy) -> Policy:
        """``policy`` with every unit whose removal is decided after this step removed too."""
        order = {g.name: i for i, g in enumerate(self.space.groups)}
        later = [u for g, u in self._decides.items() if order[g] > self._t]
        return self.space.with_removed(policy, [*self.space.removed_units(policy), *later])

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._t >= len(self.space):
            raise RuntimeError("episode is over: call reset()")
        g = self.space.groups[self._t]
        act = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), 0.0, 1.0)
        wanted = float(act[0])
        top = self.space.max_ratio
        int8 = self.joint and float(act[1]) >= INT8_FROM
        removal = 0.0
        if self.depth:  # a removal first: the widths and the clamp below see it
            unit = self._decides.get(g.name)
            if unit is not None and (float(act[-1]) >= REMOVE_FROM
                                     or not self._reachable(g.name, later_removed=True)):
                # removed as asked, or because the budget cannot be met with it kept
                self._decided = self.space.with_removed(
                    self._decided, [*self.space.removed_units(self._decided), unit])
                removal = 1.0
            if g.name in self.space.removed_groups(self._decided):  # no width, no precision
                return self._skip(g.name, removal)
        if int8:  # the precision first: the clamp below sees it
            fp32 = self._decided
            self._decided = self.space.with_int8(fp32, [*self.space.int8_groups(fp32), g.name])
            if not self._reachable(g.name, later_removed=self.depth):  # int8 modelled slower here,
                self._decided, int8 = fp32, False  # past what the budget allows
        clamp_on = self._decided  # AMC's clamp: the budget stays reachable...
        if self.depth and not self._reachable(g.name):  # ...removing later units where widths cannot
            clamp_on = self._later_removed(self._decided)
        lowest = self.fit.min_ratio(clamp_on, g.name)
        ratio = max(wanted * top, lowest)
        kept = self.space.kept_channels(g, ratio)
        self._decided[g.name] = self.space.ratio_for(g, kept)
        taken = self._decided[g.name] / top if top > 0 else 0.0
        self._prev = min(1.0, taken)
        self._t += 1
        self._prev_int8 = 1.0 if int8 else 0.0
        info: dict[str, Any] = {"action": [self._prev, self._prev_int8] if self.joint else self._prev}
        if self.depth:
            info["action"] = [*(info["action"] if self.joint else [self._prev]), removal]
        return self._finish(info)

    def _skip(self, group: str, removal: float) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """The step of a group inside a removed unit: dense, fp32, action 0 (its layers are gone)."""
        self._decided[group] = 0.0
        self._prev, self._prev_int8 = 0.0, 0.0
        self._t += 1
        return self._finish({"action": [0.0, 0.0, removal] if self.joint else [0.0, removal]})

    def _finish(self, info: dict[str, Any]) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        done = self._t == len(self.space)
        reward = 0.0
        if done:
            info["policy"] = dict(self._decided)
            if self.reward_fn is not None:
                reward = float(self.reward_fn(dict(self._decided)))
        return self._obs(), reward, done, False, info
