"""``sensitivity``: per-group sensitivity analysis, then a greedy allocation to the budget.

The classic analysis prunes each layer alone from the dense model; at a tight budget those probes
are far over budget, and every proposal here must fit. So the probes are taken around the
uniform-fill baseline instead: group g is pruned harder (``ratios`` evenly spaced steps from its
baseline ratio to ``max_ratio``) while the others stay at the baseline — always feasible, and it
measures exactly the trade the allocation makes. The loss curve of each group is piecewise linear
through (baseline, 0) and its probes, extended below the baseline with its first slope. The
allocation starts from every group at ``max_ratio`` and repeatedly gives one channel step back to
the group with the largest loss reduction per MAC, while the budget holds.

Under a latency budget "holds" is the latency model's prediction, fitted on the probes' measured
latencies; an allocation whose measured latency is over the budget (seen on a transformer, whose
probes all sit near the baseline) is a new measured point, and the allocation is made again with
the refitted model and a bound tightened by half the measured excess so far — up to ``allocations``
times — until one is feasible as measured.

In a space with int8 (``search_space.precision``) each group is also probed in int8 (the baseline's
widths, that group alone in int8: as feasible as the baseline, since int8 adds no MACs) and its
measured quality drop is the group's int8 loss. The allocation then starts from every group at
``max_ratio`` in the cheaper precision (int8 unless the latency model says int8 is slower there)
and its steps are of two kinds — a channel step back to a group, or a group back to fp32 (gaining
its int8 loss) — the step with the largest loss reduction per unit of cost first (cost: predicted
latency under a latency budget, MACs otherwise, where int8 costs nothing: a group goes back to
fp32 whenever int8 lost quality).

In a space with depth (``search_space.depth``) each unit is also probed removed (the baseline
with that block or layer gone: cheaper than the baseline, so feasible) and its measured quality
drop is the unit's removal loss. The allocation then starts with every unit removed too, and a
third kind of step puts a unit back (its groups at the baseline's widths, or as wide as they
already are), gaining its removal loss less its groups' modelled width losses, for the cost its
layers add: a unit whose removal lost little for much cost stays removed. Removal losses are
measured one unit at a time and summed, like the width losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from agents.base import Agent
from agents.types import Budget, Outcome, Proposal
from search_spaces.space import Policy, SearchSpace

#: the key of a group's int8 probe among the results (``curves`` reads the others as ratios)
INT8_PROBE = "int8"
#: the key of a unit's removal probe among the results
DROP_PROBE = "removed"

#: After a measured miss the bound is tightened by this share of the excess: the refitted latency
#: model absorbs part of the miss already (the whole excess over-corrected on noisy latencies).
TIGHTEN_BY = 0.5


class SensitivityAgent(Agent):
    """Baseline, one probe per (group, step), then the greedy allocation (again, while measured
    over a latency budget); then done."""

    name = "sensitivity"

    def __init__(self, space: SearchSpace, budget: Budget, *, seed: int = 0, ratios: int = 3,
                 allocations: int = 4) -> None:
        super().__init__(space, budget, seed=seed)
        if not isinstance(ratios, int) or ratios < 1:
            raise ValueError(f"options.ratios must be a positive integer, got {ratios!r}")
        if not isinstance(allocations, int) or allocations < 1:
            raise ValueError(f"options.allocations must be a positive integer, got {allocations!r}")
        self.ratios, self.allocations = ratios, allocations
        # the baseline the probes are taken around (uniform_fill moves as the latency model learns)
        self._base: Policy = self.fit.uniform_fill()
        self._queue: list[dict[str, Any]] = self._probe_plan()  # probes still to ask
        self._results: dict[str, float] = {}  # "group@ratio" (or "baseline") -> quality
        self._expected = len(self._queue) + 1  # the probes and the baseline
        self._keys: dict[int, str] = {}  # trial id -> probe key, for probes not yet told
        self._allocated: list[str] = []  # signatures of the allocations proposed so far
        self._allocation_trial: int | None = None  # the allocation's trial id until it is told
        self._margin = 0.0  # how much the bound is tightened (from the allocations' measured excess)
        self._done = False

    def _probe_plan(self) -> list[dict[str, Any]]:
        base = self._base
        plan: list[dict[str, Any]] = []  # the baseline itself is asked by Agent.ask
        seen = {self.space.signature(base)}
        for g in self.space.groups:
            b = base[g.name]
            for k in range(1, self.ratios + 1):
                r = b + (self.space.max_ratio - b) * k / self.ratios
                policy = self.space.round({**base, g.name: r})
                if self.space.signature(policy) in seen:
                    continue
                seen.add(self.space.signature(policy))
                plan.append({"key": f"{g.name}@{policy[g.name]!r}", "policy": policy})
        if self.space.quantizable:  # each group alone in int8, at the baseline's widths
            for g in self.space.groups:
                policy = self.space.with_int8(self.space.round(base), [g.name])
                plan.append({"key": f"{g.name}@{INT8_PROBE}", "policy": policy})
        for u in self.space.units:  # each unit removed from the baseline
            policy = self.space.round(self.space.with_removed(base, [u.name]))
            plan.append({"key": f"{u.name}@{DROP_PROBE}", "policy": policy})
        return plan

    @property
    def finished(self) -> bool:
        return self._done and not self.has_replay

    def propose(self, n: int) -> list[Proposal]:
        out: list[Proposal] = []
        while self._queue and len(out) < n:
            item = self._queue.pop(0)
            out.append(self._proposal(item["policy"], role="probe", key=item["key"]))
            self._keys[out[-1].trial_id] = item["key"]
        if not out and not self._done and self._allocation_trial is None and len(self._results) >= self._expected:
            policy = self.allocate()
            signature = self.space.signature(policy)
            if signature in self._allocated:  # the refitted model changed nothing: stop
                self._done = True
                return out
            self._allocated.append(signature)
            out.append(self._proposal(policy, role="allocation", allocation=len(self._allocated)))
            self._allocation_trial = out[-1].trial_id
        return out  # [] while probes are still out: nothing to propose until they come back

    def observe(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.trial_id == self._allocation_trial:
                self._allocation_trial = None
                # only a latency budget can be missed as measured (MACs and params are exact)
                m = o.metrics
                if (m is not None and not self.budget.feasible(m) and self.budget.uses_latency
                        and len(self._allocated) < self.allocations):
                    self._margin += TIGHTEN_BY * max(self.budget.violations(m))
                else:
                    self._done = True
                continue
            key = "baseline" if o.trial_id == self.baseline_trial_id else self._keys.pop(o.trial_id, None)
            if key is not None:
                self._results[key] = o.metrics.quality if o.metrics is not None else 0.0

    def curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per group: probe ratios and quality losses, (baseline ratio, 0) first."""
        base = self._base
        q0 = self._results.get("baseline", 0.0)
        out = {}
        for g in self.space.groups:
            pts = [(base[g.name], 0.0)]
            for key, q in self._results.items():
                name, _, r = key.rpartition("@")
                if name == g.name and r not in (INT8_PROBE, DROP_PROBE):
                    pts.append((float(r), q0 - q))
            pts.sort()
            out[g.name] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
        return out

    def int8_losses(self) -> dict[str, float]:
        """Per group: the quality its int8 probe lost against the baseline (0 where unmeasured)."""
        q0 = self._results.get("baseline", 0.0)
        return {g.name: q0 - self._results[key] if (key := f"{g.name}@{INT8_PROBE}") in self._results else 0.0
                for g in self.space.groups}

    def removal_losses(self) -> dict[str, float]:
        """Per unit: the quality its removal probe lost against the baseline (0 where
        unmeasured: a failed probe counts as quality 0, a large loss)."""
        q0 = self._results.get("baseline", 0.0)
        return {u.name: q0 - self._results[key] if (key := f"{u.name}@{DROP_PROBE}") in self._results else 0.0
                for u in self.space.units}

    def _restores(self, widths: Policy, removed: set[str], loss: Callable[[str, float], float]
                  ) -> list[tuple[str, dict[str, float], float]]:
        """The steps that put a removed unit back: (unit, its groups' new ratios, quality gained).
        Its groups come back at the baseline's widths, or wider if they already are."""
        space, drop = self.space, self.removal_losses()
        out = []
        for name in sorted(removed, key=lambda u: space.unit(u).index):
            ratios = {g: min(widths[g], self._base[g]) for g in space.unit(name).groups}
            out.append((name, ratios, drop[name] - sum(loss(g, r) for g, r in ratios.items())))
        return out

    def allocate(self) -> Policy:
        curves = self.curves()

        def loss(name: str, r: float) -> float:
            xs, ys = curves[name]
            if len(xs) > 1 and r < xs[0]:  # below the baseline: extend the first slope (>= 0)
                slope = max(0.0, (ys[1] - ys[0]) / max(xs[1] - xs[0], 1e-9))
                return float(ys[0] - slope * (xs[0] - r))
            return float(np.interp(r, xs, ys))

        if self.space.quantizable:
            return self._allocate_joint(loss)
        space = self.space
        kept = {g.name: space.levels(g)[0] for g in space.groups}
        policy = {n: space.ratio_for(n, k) for n, k in kept.items()}
        removed = {u.name for u in space.units}  # with depth: every unit removed to start from
        while True:
            best: tuple[str, int] | None = None
            best_gain = -np.inf
            current = space.with_removed(policy, removed) if removed else policy
            cost0 = space.macs(current)
            gone = space.removed_groups(current)
            for g in space.groups:
                higher = [k for k in space.levels(g) if k > kept[g.name]]
                if not higher or g.name in gone:
                    continue
                trial = {**current, g.name: space.ratio_for(g, higher[0])}
                if not self.fit.fits(trial, margin=self._margin):
                    continue
                gain = loss(g.name, policy[g.name]) - loss(g.name, trial[g.name])
                per = gain / max(space.macs(trial) - cost0, 1.0)
                if per > best_gain:
                    best, best_gain = (g.name, higher[0]), per
            restore = None
            for unit, ratios, gain in self._restores(policy, removed, loss):
                trial = space.with_removed({**policy, **ratios}, removed - {unit})
                if not self.fit.fits(trial, margin=self._margin):
                    continue
                per = gain / max(space.macs(trial) - cost0, 1.0)
                if per > best_gain:
                    best, best_gain, restore = None, per, (unit, ratios)
            if restore is not None:
                removed.discard(restore[0])
                for name, r in restore[1].items():
                    kept[name] = space.kept_channels(name, r)
                    policy[name] = space.ratio_for(name, kept[name])
                continue
            if best is None:
                return self.fit.fill(current, margin=self._margin)
            kept[best[0]] = best[1]
            policy[best[0]] = space.ratio_for(best[0], best[1])

    def _cost(self, policy: Policy) -> float:
        """What the joint allocation spends: predicted latency ratio under a latency budget,
        MACs ratio otherwise."""
        if self.budget.uses_latency:
            return self.fit.latency.predict_ratio(policy)
        return self.space.macs_ratio(policy)

    def _allocate_joint(self, loss: Callable[[str, float], float]) -> Policy:
        """The greedy allocation over widths and precisions (see the module docstring)."""
        space, int8_loss = self.space, self.int8_losses()
        widths = {g.name: space.ratio_for(g, space.levels(g)[0]) for g in space.groups}
        fp32 = space.with_int8(widths, [])
        int8 = {g for g in space.names  # the cheaper precision per group to start from
                if self._cost(space.with_int8(widths, [g])) <= self._cost(fp32) + 1e-12}
        removed = {u.name for u in space.units}  # with depth: every unit removed to start from
        while True:
            policy = space.with_removed(space.with_int8(widths, int8), removed)
            cost0 = self._cost(policy)
            best: tuple[str, float | None] | None = None
            best_gain = -np.inf
            restore = None
            for unit, ratios, gain in self._restores(widths, removed, loss):
                trial = space.with_removed(space.with_int8({**widths, **ratios}, int8), removed - {unit})
                if not self.fit.fits(trial, margin=self._margin):
                    continue
                spent = self._cost(trial) - cost0
                per = gain / spent if spent > 1e-12 else (np.inf if gain >= 0 else -np.inf)
                if per > best_gain:
                    best_gain, restore = per, (unit, ratios)
            gone = space.removed_groups(policy)
            for g in space.groups:
                if g.name in gone:
                    continue
                # (policy after the move, quality gained, (group, new ratio or None: to fp32))
                moves: list[tuple[Policy, float, tuple[str, float | None]]] = []
                higher = [k for k in space.levels(g) if k > space.kept_channels(g, widths[g.name])]
                if higher:
                    ratio = space.ratio_for(g, higher[0])
                    gain = loss(g.name, widths[g.name]) - loss(g.name, ratio)
                    moves.append((space.with_int8({**widths, g.name: ratio}, int8), gain, (g.name, ratio)))
                if g.name in int8 and int8_loss[g.name] > 0:  # back to fp32 only if int8 lost quality
                    moves.append((space.with_int8(widths, int8 - {g.name}), int8_loss[g.name], (g.name, None)))
                for trial, gain, move in moves:
                    if removed:
                        trial = space.with_removed(trial, removed)
                    if not self.fit.fits(trial, margin=self._margin):
                        continue
                    spent = self._cost(trial) - cost0
                    per = gain / spent if spent > 1e-12 else (np.inf if gain >= 0 else -np.inf)
                    if per > best_gain:
                        best, best_gain, restore = move, per, None
            if restore is not None:
                removed.discard(restore[0])
                widths.update(restore[1])
                continue
            if best is None:
                return self.fit.fill(policy, margin=self._margin)
            name, new = best
            if new is None:
                int8.discard(name)
            else:
                widths[name] = new

    def extra_state(self) -> dict[str, Any]:
        return {
            "queue": self._queue,
            "results": self._results,
            "keys": {str(k): v for k, v in self._keys.items()},
            "expected": self._expected,
            "base": self._base,
            "allocated": self._allocated,
            "allocation_trial": self._allocation_trial,
            "margin": self._margin,
            "done": self._done,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "queue" in state:
            self._queue = [dict(item) for item in state["queue"]]
        self._results = {k: float(v) for k, v in state.get("results", {}).items()}
        self._keys = {int(k): v for k, v in state.get("keys", {}).items()}
        self._expected = int(state.get("expected", self._expected))
        if "base" in state:
            self._base = {k: float(v) for k, v in state["base"].items()}
        self._allocated = list(state.get("allocated", []))
        self._allocation_trial = state.get("allocation_trial")
        self._margin = float(state.get("margin", 0.0))
        self._done = bool(state.get("done", False))
