"""Meeting a budget by construction: the uniform ratio, the channel fill, projection, clamping.

Every agent goes through one :class:`BudgetFit` so the rules are written once:

* ``uniform_fill()`` — one ratio for every group, bisected to the budget, then *filled*: one
  channel step is added back to each group in turn while the budget still holds (plain uniform
  rounding leaves budget unused because every group drops a channel at the same ratio).
* ``project(policy)`` — any policy onto the budget, keeping its shape: walk the path from "prune
  less" (ratios scaled toward 0) to "prune more" (ratios moved toward ``max_ratio``), bisect the
  least pruning that fits, then fill the leftover budget.
* ``min_ratio(prefix, group)`` — AMC's clamp: the least this group may be pruned so that the
  budget stays reachable if every later group is pruned as hard as allowed.
* ``depth_only()`` — in a space with depth (``space.units``): units removed in ``removal_order``
  until the full-width network fits (the ``depth-only`` baseline); ``fill`` and ``project`` keep
  a policy's removed units as they are (their groups' widths do not matter).

MACs and params bounds use the space's analytic cost model. Latency bounds use a
:class:`LatencyModel` fitted on measured points (ridge regression of the measured latency ratio on
per-group kept fractions, shrunk toward a MACs-proportional prior), so the same clamp and
projection steer toward the latency bound; measured latency stays the real constraint.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from agents.types import Budget, Outcome
from search_spaces.space import Policy, SearchSpace, is_keep_key

_EPS = 1e-9


class BudgetError(ValueError):
    """The budget cannot be met in this space (even pruning every group to ``max_ratio``)."""


class LatencyModel:
    """Predicts latency ratio (pruned / dense) from the policy's MACs, per group.

    latency_ratio ≈ a + b·macs_ratio + Σ_g d_g·share_g, where share_g is the MACs (over dense) of
    the layers group g scales at the policy's kept channels (a layer scaled by two groups counts
    half to each). The prior is a = 0, b = 1, d = 0: latency proportional to MACs. Measured points
    fit a and b almost freely (fixed overhead, slope) and the per-group corrections d_g by ridge
    regression (``strength`` weighs the prior as that many points in each feature's own scale),
    so a group whose channels cost more or less time than their MACs suggest is learnt, and a
    few points cannot make the model wild.

    In a space with int8: + w·(MACs share run in int8) + v·(share of groups in int8) + Σ_g e_g·[g
    in int8]. The two global terms carry what int8 does everywhere (faster kernels in proportion
    to the MACs, a quantize/dequantize overhead per group: together, narrow layers gain little or
    lose), so a few measured points teach them; the per-group e_g (prior 0, ridge-shrunk like the
    d_g) take what one group does differently — a layer whose int8 kernel is slow, say — which the
    latency table's one-group-in-int8 entries measure.

    In a space with depth (``space.units``) a removed unit's layers leave the MACs features (so
    the prior already predicts removal saves its MACs' share) and two more kinds of term learn
    what removal saves beyond that — each layer's fixed cost, which narrowing leaves in place:
    + u·(share of units removed) + Σ_u r_u·[u removed]. Prior 0 (removal as MACs-proportional
    as narrowing); the global u from a few measured points, the per-unit r_u (shrunk like e_g)
    for a unit that differs, as measured by latency-table removal entries or outcomes.
    """

    #: in a space with int8: the prior's latency change per MACs share run in int8 (int8 kernels
    #: about twice as fast) and per share of groups in int8 (quantize/dequantize overhead: none)
    INT8_PRIOR = (-0.5, 0.0)
    #: how much harder than the other terms each group's own int8 term is shrunk toward 0
    INT8_GROUP_STRENGTH = 16.0
    #: how much harder than the other terms each unit's own removal term is shrunk toward 0
    UNIT_STRENGTH = 16.0

    def __init__(self, space: SearchSpace, *, strength: float = 1.0) -> None:
        self.space = space
        self.strength = strength
        self._index = {n: i for i, n in enumerate(space.names)}
        # int8 adds two global terms (the MACs share in int8, the share of groups in int8) that a
        # few measured points teach, and one per group (prior 0) for what a group does differently
        self._int8 = space.quantizable
        int8_prior = [*self.INT8_PRIOR, *[0.0] * len(space)] if self._int8 else []
        # depth adds one global term (the share of units removed) and one per unit, prior 0
        self._depth = space.depth
        self._units = {u.name: i for i, u in enumerate(space.units)}
        self._unit_at = 2 + len(space) + len(int8_prior)  # the global removal term's index
        depth_prior = [0.0] * (1 + len(space.units)) if self._depth else []
        self.prior = np.array([0.0, 1.0] + [0.0] * len(space) + int8_prior + depth_prior)
        self.weights = self.prior.copy()
        self.points: list[tuple[list[float], float]] = []  # (features, latency ratio)
        self.point_weights: list[float] = []  # how many measured outcomes each point counts as
        self.dense_ms: float | None = None  # learnt from measurements carrying both ms and ratio

    def features(self, policy: Mapping[str, float]) -> np.ndarray:
        space = self.space
        kept = space.kept(policy)
        frac = {g.name: kept[g.name] / g.channels for g in space.groups}
        n = len(space)
        x = np.zeros(len(self.prior))
        x[0] = 1.0
        removed = space.removed_units(policy) if self._depth else []
        gone = {c for u in removed for c in space.unit(u).costs}
        for c in space.costs:
            if c.name in gone:  # a removed unit's layers cost nothing
                continue
            share = c.macs * math.prod(frac[g] for g in c.scale_by) / space.dense_macs
            x[1] += share
            for g in c.scale_by:
                x[2 + self._index[g]] += share / len(c.scale_by)
        if self._int8:
            int8 = space.int8_groups(policy)
            x[2 + n] = sum(x[2 + self._index[g]] for g in int8)
            x[3 + n] = len(int8) / n
            for g in int8:
                x[4 + n + self._index[g]] = 1.0
        if removed:
            x[self._unit_at] = len(removed) / len(self._units)
            for u in removed:
                x[self._unit_at + 1 + self._units[u]] = 1.0
        return x

    def add(self, policy: Mapping[str, float], latency_ratio: float, latency_ms: float | None = None) -> None:
        self.points.append((self.features(policy).tolist(), float(latency_ratio)))
        self.point_weights.append(1.0)
        if latency_ms is not None and latency_ratio > 0:
            self.dense_ms = latency_ms / latency_ratio
        self._fit()

    def _fit(self) -> None:
        x = np.array([f for f, _ in self.points])
        y = np.array([r for _, r in self.points])
        w = np.array(self.point_weights)
        # The prior counts as ``strength`` pseudo-points in each feature's own scale (the group
        # features are small MACs shares; a unit penalty would freeze them at the prior).
        scale = np.maximum((w[:, None] * x**2).sum(axis=0) / w.sum(), 1e-6)
        scale[:2] *= 1e-3  # overhead and slope: nearly free
        if self._int8:  # a group's own int8 term only for what the global ones cannot explain
            scale[4 + len(self.space):4 + 2 * len(self.space)] *= self.INT8_GROUP_STRENGTH
        if self._depth:  # a unit's own removal term only for what the global one cannot explain
            scale[self._unit_at + 1:] *= self.UNIT_STRENGTH
        lam = np.diag(self.strength * scale)
        # argmin Σ w_i (x_i·θ - y_i)^2 + (θ - prior)^T lam (θ - prior) (closed form)
        xw = x * w[:, None]
        self.weights = np.linalg.solve(xw.T @ x + lam, xw.T @ y + lam @ self.prior)

    def add_points(self, points: Iterable[tuple[Mapping[str, float], float]], *, total_weight: float | None = None) -> None:
        """Several measured ``(policy, latency ratio)`` points at once (one refit); with
        ``total_weight`` they count together as that many outcomes (e.g. a table of one-group
        cuts that should not outvote the networks the search actually measures)."""
        new = [(self.features(p).tolist(), float(r)) for p, r in points]
        if not new:
            return
        self.points += new
        self.point_weights += [1.0 if total_weight is None else total_weight / len(new)] * len(new)
        self._fit()

    def predict_ratio(self, policy: Mapping[str, float]) -> float:
        return float(self.features(policy) @ self.weights)

    @property
    def overhead(self) -> float:
        """a: the latency ratio no channel removal touches."""
        return float(self.weights[0])

    def layer_weight(self, scale_by: tuple[str, ...], int8: Iterable[str] = ()) -> float:
        """Latency ratio per MACs share of a layer scaled by these groups, ``int8`` of them in
        int8: b + mean of their d_g, plus the int8 MACs term's share of it (so the prediction is
        ``overhead + Σ_layers macs share · layer_weight + Σ_int8 groups int8_group_cost``)."""
        if not scale_by:
            return float(self.weights[1])
        w = float(self.weights[1] + sum(self.weights[2 + self._index[g]] for g in scale_by) / len(scale_by))
        if self._int8:
            eight = set(int8)
            w += float(self.weights[2 + len(self.space)]) * sum(g in eight for g in scale_by) / len(scale_by)
        return w

    def int8_group_cost(self, group: str) -> float:
        """The latency ratio ``group`` in int8 adds whatever its width (its share of the group
        count term and its own term; 0 in a space without int8)."""
        if not self._int8:
            return 0.0
        n = len(self.space)
        return float(self.weights[3 + n] / n + self.weights[4 + n + self._index[group]])

    def unit_cost(self, unit: str) -> float:
        """The latency ratio removing ``unit`` changes beyond its layers' MACs (its share of the
        removal-count term and its own term; 0 in a space without depth): the fixed cost its
        layers had, as a (usually negative) number."""
        if not self._depth:
            return 0.0
        return float(self.weights[self._unit_at] / len(self._units) + self.weights[self._unit_at + 1 + self._units[unit]])

    def state_dict(self) -> dict[str, Any]:
        return {"points": self.points, "point_weights": self.point_weights, "dense_ms": self.dense_ms}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.points = [(list(f), float(r)) for f, r in state.get("points", [])]
        self.point_weights = [float(w) for w in state.get("point_weights", [1.0] * len(self.points))]
        self.dense_ms = state.get("dense_ms")
        if self.points:
            self._fit()
        else:
            self.weights = self.prior.copy()


class BudgetFit:
    """The budget rules for one space: feasibility, uniform fill, projection and the AMC clamp."""

    def __init__(self, space: SearchSpace, budget: Budget) -> None:
        self.space = space
        self.budget = budget
        self.latency = LatencyModel(space)
        self._uniform_fill: Policy | None = None
        # with depth the cheapest network also has every removable unit removed
        lowest = space.with_removed(space.uniform(space.max_ratio), [u.name for u in space.units])
        # MACs and params are exact: a bound the narrowest network misses is refused up front.
        # Latency is only modelled until measured: the search goes on, and finalize says whether
        # the delivered file met it (budget_met), with the closest candidate's measured figures.
        if budget.analytic_violation(space, lowest) > _EPS:
            raise BudgetError(
                f"budget {budget.to_dict()} is unreachable: pruning every group at max_ratio="
                f"{space.max_ratio:g}{' with every removable unit removed' if space.depth else ''} gives "
                f"macs_ratio={space.macs_ratio(lowest):.3f}, "
                f"params_ratio={space.params_ratio(lowest):.3f}"
            )

    # --- feasibility --------------------------------------------------------------------------
    def violation(self, policy: Mapping[str, float]) -> float:
        """Largest predicted violation (<= 0: fits): analytic MACs/params, modelled latency."""
        v = self.budget.analytic_violation(self.space, policy)
        if self.budget.latency_ratio is not None:
            v = max(v, self.latency.predict_ratio(policy) - self.budget.latency_ratio)
        if self.budget.latency_ms is not None and self.latency.dense_ms is not None:
            v = max(v, self.latency.predict_ratio(policy) * self.latency.dense_ms - self.budget.latency_ms)
        return v

    def fits(self, policy: Mapping[str, float], *, margin: float = 0.0) -> bool:
        """Predicted within the budget, with ``margin`` to spare (in the budget's own units)."""
        return self.violation(policy) <= _EPS - margin

    def observe(self, outcomes: Iterable[Outcome]) -> None:
        """Feeds measured latencies to the latency model (only when the budget has one)."""
        if not self.budget.uses_latency:
            return
        changed = False
        for o in outcomes:
            m = o.metrics
            if m is not None and m.latency_ratio is not None:
                self.latency.add(o.policy, m.latency_ratio, m.latency_ms)
                changed = True
        if changed:
            self.invalidate()

    def with_latency_scaled(self, factor: float) -> BudgetFit:
        """The same rules under the budget's latency bounds times ``factor``, on this fit's
        latency model (shared, not copied: what it learns, both see)."""
        b = self.budget
        fit = BudgetFit(self.space, replace(
            b, latency_ratio=None if b.latency_ratio is None else b.latency_ratio * factor,
            latency_ms=None if b.latency_ms is None else b.latency_ms * factor))
        fit.latency = self.latency
        return fit

    def invalidate(self) -> None:
        """Forgets cached constructions (the latency model changed)."""
        self._uniform_fill = None

    # --- constructions ------------------------------------------------------------------------
    def uniform_ratio(self, *, int8: bool = False, removed: Iterable[str] = ()) -> float:
        """The smallest single ratio whose uniform policy fits (bisection on the cost model);
        ``int8``: with every group in int8; ``removed``: with these units removed."""
        groups = self.space.names if int8 else []
        units = list(removed)

        def uniform(ratio: float) -> Policy:
            policy = self.space.with_int8(self.space.uniform(ratio), groups)
            return self.space.with_removed(policy, units) if units else policy

        if self.fits(uniform(0.0)):
            return 0.0
        lo, hi = 0.0, self.space.max_ratio  # lo infeasible, hi feasible
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if self.fits(uniform(mid)) else (mid, hi)
        return hi

    def uniform_fill(self) -> Policy:
        """The baseline: bisected uniform ratio, then filled channel by channel (every group fp32)."""
        if self._uniform_fill is None:
            self._uniform_fill = self.fill(self.space.uniform(self.uniform_ratio()))
        return dict(self._uniform_fill)

    def quantized_uniform_fill(self) -> Policy:
        """The uniform-fill baseline with every group in int8 (``quantize + uniform-fill``)."""
        space = self.space
        return self.fill(space.with_int8(space.uniform(self.uniform_ratio(int8=True)), space.names))

    def depth_only(self) -> Policy:
        """The ``depth-only`` baseline: units removed in :meth:`removal_order` until the network at
        full width fits, then (only if removing every unit is not enough) one uniform ratio for
        the rest, bisected and filled like ``uniform_fill``. Every group fp32."""
        space = self.space
        dense, removed = space.uniform(0.0), list[str]()
        for unit in self.removal_order():
            if self.fits(space.with_removed(dense, removed)):
                break
            removed.append(unit)
        ratio = self.uniform_ratio(removed=removed)
        return self.fill(space.with_removed(space.uniform(ratio), removed))

    def removal_order(self) -> list[str]:
        """The order ``depth_only`` removes units in, decided without a measurement.

        Nothing says at proposal time which blocks the network misses least, so the rule keeps
        what is known to matter: removal is spread — the next unit comes from the stage (units
        sharing a parent module: a ResNet stage, a transformer's encoder) with the smallest
        share of its units removed, so no stage is emptied while another is whole, and within
        a stage every other unit goes first, from the last (a stage of 6 loses 5, 3, 1, then 4,
        2, 0: DistilBERT's every-other-layer student, and deeper layers are the more redundant,
        Gromov et al. 2024) — and among stages equally touched, the unit that saves the most of
        the budget's costs (MACs, params, modelled latency) first, so fewest units go; the
        deeper stage on a tie.
        """
        space = self.space
        stages: dict[str, list[str]] = {}
        for u in space.units:
            stages.setdefault(u.name.rpartition(".")[0], []).append(u.name)
        queues = {}
        for stage, names in stages.items():
            n = len(names)
            queues[stage] = [names[i] for i in [*range(n - 1, -1, -2), *range(n - 2, -1, -2)]]
        position = {stage: i for i, stage in enumerate(stages)}
        order: list[str] = []
        while any(queues.values()):
            base = self._costs(space.with_removed(space.uniform(0.0), order))
            keys = {}
            for stage, queue in queues.items():
                if queue:
                    touched = 1 - len(queue) / len(stages[stage])
                    after = self._costs(space.with_removed(space.uniform(0.0), [*order, queue[0]]))
                    keys[stage] = (touched, -round(base - after, 9), -position[stage])
            stage = min(keys, key=keys.__getitem__)
            order.append(queues[stage].pop(0))
        return order

    def _costs(self, policy: Mapping[str, float]) -> float:
        """The sum of the budget's costs at ``policy``, each as a ratio of its bound (MACs,
        params; latency as modelled): what removing a unit saves, comparably across units."""
        b, total = self.budget, 0.0
        if b.macs_ratio is not None:
            total += self.space.macs_ratio(policy) / b.macs_ratio
        if b.params_ratio is not None:
            total += self.space.params_ratio(policy) / b.params_ratio
        if b.uses_latency:
            total += self.latency.predict_ratio(policy) / (b.latency_ratio or 1.0)
        return total

    def quantize_only(self) -> Policy:
        """Nothing pruned, every group in int8 (``quantize-only``: whatever the budget)."""
        return self.space.with_int8(self.space.uniform(0.0), self.space.names)

    def sweep(self, points: int) -> list[Policy]:
        """The baseline's trade-off curve, cheapest first: ``uniform_fill`` at fractions k/points
        (k = 1..points) of the MACs/params bounds (of the dense MACs when the budget has neither).

        Levels the space cannot reach are left out and equal architectures kept once; with a
        MACs/params budget the last point is this budget's own baseline.
        """
        b, out, seen = self.budget, [], set()
        top_macs = b.macs_ratio if b.macs_ratio is not None or b.params_ratio is not None else 1.0
        for k in range(1, points + 1):
            f = k / points
            level = Budget(
                macs_ratio=None if top_macs is None else top_macs * f,
                params_ratio=None if b.params_ratio is None else b.params_ratio * f,
            )
            try:
                level_fit = BudgetFit(self.space, level)
            except BudgetError:
                continue
            policy = level_fit.uniform_fill()
            if (sig := self.space.signature(policy)) not in seen:
                seen.add(sig)
                out.append(policy)
        return out

    def fill(self, policy: Mapping[str, float], order: list[str] | None = None, *, margin: float = 0.0) -> Policy:
        """Adds back one channel step per group in turn (round robin) while the budget holds
        (with ``margin`` to spare, as in ``fits``)."""
        space = self.space
        kept = space.kept(policy)
        int8 = space.int8_groups(policy)
        removed = space.removed_units(policy)
        gone = space.removed_groups(policy)  # a removed unit's groups: nothing to fill
        order = [n for n in order or space.names if n not in gone]
        levels = {n: space.levels(n) for n in order}
        grown = True
        while grown:
            grown = False
            for n in order:
                higher = [k for k in levels[n] if k > kept[n]]
                if not higher:
                    continue
                old, kept[n] = kept[n], higher[0]
                if self.fits(self._from_kept(kept, int8, removed), margin=margin):
                    grown = True
                else:
                    kept[n] = old
        return self._from_kept(kept, int8, removed)

    def project(self, policy: Mapping[str, float], *, fill: bool = True, grow: bool = True) -> Policy:
        """The policy moved onto the budget along its own shape, rounded (and filled). Its
        removed units stay removed; with depth, when the widths cannot reach the budget with
        them, more units are removed in ``removal_order``.

        ``grow=False`` leaves a policy that already fits as it is (rounded): for searches that
        want cheaper-than-budget points too (NSGA-II's front).
        """
        space = self.space
        p = space.validate(policy)
        top = space.max_ratio
        if not grow and self.fits(p):
            return space.round(p)
        # the precisions and the removed units stay as they are: only the widths move
        widths = {n: r for n, r in space.widths(p).items() if not is_keep_key(n)}
        int8 = space.int8_groups(p)
        removed = space.removed_units(p) if space.depth else None

        def at(t: float) -> Policy:  # t in [-1, 1]: -1 prunes nothing, 1 prunes everything at max
            if t <= 0:
                moved = {n: r * (1 + t) for n, r in widths.items()}
            else:
                moved = {n: r + t * (top - r) for n, r in widths.items()}
            out = space.with_int8(moved, int8)
            return space.with_removed(out, removed) if removed else out

        if removed is not None and not self.fits(at(1.0)):
            # a budget the widths cannot reach with these units: remove more (``removal_order``)
            for unit in self.removal_order():
                if unit not in removed:
                    removed.append(unit)
                    if self.fits(at(1.0)):
                        break
        if self.fits(at(-1.0)):
            t = -1.0
        else:
            lo, hi = -1.0, 1.0  # cost falls as t grows: find the smallest feasible t
            for _ in range(40):
                mid = (lo + hi) / 2
                lo, hi = (lo, mid) if self.fits(at(mid)) else (mid, hi)
            t = hi
        out = space.round(at(t))
        return self.fill(out) if fill else out

    def min_ratio(self, decided: Mapping[str, float], group: str) -> float:
        """AMC's clamp: the least ratio for ``group`` such that, with ``decided`` groups as they
        are and every later group at ``max_ratio``, the budget can still be met."""
        space = self.space
        trial = {n: space.max_ratio for n in space.names}
        trial.update(decided)
        levels = space.levels(group)  # ascending kept; cost grows with kept: bisect the largest that fits
        lo, hi = -1, len(levels) - 1  # levels[lo] fits (lo = -1: none known), levels[hi + 1:] do not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            trial[group] = space.ratio_for(group, levels[mid])
            lo, hi = (mid, hi) if self.fits(trial) else (lo, mid - 1)
        return space.ratio_for(group, levels[lo]) if lo >= 0 else space.max_ratio

    def _from_kept(self, kept: Mapping[str, int], int8: Iterable[str] = (), removed: Iterable[str] = ()) -> Policy:
        policy = self.space.with_int8({n: self.space.ratio_for(n, k) for n, k in kept.items()}, int8)
        units = list(removed)
        return self.space.round(self.space.with_removed(policy, units)) if units else policy
