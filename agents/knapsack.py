"""``knapsack``: widths allocated exactly to the budget (HALP / MDP style), then refined.

HALP (NeurIPS 2022) and MDP (ECCV 2024) choose every layer's width at once: the most importance
kept within a latency budget read from a measured per-layer latency table, a multiple-choice
knapsack. Here:

1. **Costs.** MACs and params from the space's analytic model (exact, products of two groups'
   widths included). Latency from the shared ``LatencyModel`` (``self.fit.latency``: a + b·MACs
   + per-group corrections, ridge-shrunk toward MACs-proportional) fitted on the per-group
   latency table workers measured (``AgentHints.latency_table``, see ``agents.latency_table``;
   all its entries together count as ``table_weight`` outcomes) and refitted on every measured
   outcome. The bound the solver sees is the budget less
   ``latency_margin`` and ``latency_sigmas`` times the RMS by which measured latency ran over
   the model's prediction, each made before the measurement (a one-sided chance constraint:
   measured latency is noisy, and a policy the model puts exactly at the budget is a coin flip).
2. **Quality.** Each group's loss at each width is ``α_g · ℓ_g(k)``, ``ℓ_g`` the share of the
   group's channel importance (stored in the space) that width removes. The weights start equal
   (the first solve is the pure importance allocation) and are refitted after every evaluation:
   bounded ridge regression (``scipy.optimize.lsq_linear``) of measured quality on the ``ℓ``
   features, shrunk toward a common scale.
   In a space with int8 a group's int8 costs ``β_g`` more (the same fit, one indicator feature
   per group, shrunk toward ``int8_loss`` times the common scale and bounded at 0: a prior of a
   small loss, learnt per group as evaluations in int8 come back), and its latency is the
   latency model's in that precision (its int8 terms, learnt from the table's int8 entries and
   every outcome): each group's options are (width, precision) pairs, so the MILP stays exact.
   Under a MACs/params budget int8 buys nothing, so the knapsack leaves every group fp32.
   In a space with depth a unit's removal costs ``γ_u`` (one indicator feature per unit, shrunk
   toward ``removal_loss`` times the common scale times its number of groups — removal loses
   about what its groups' whole importance is worth — bounded at 0): a group inside a unit has
   one more option, 0 channels (the unit removed, ``agents.cost_model.option_levels``), whose
   width loss is 0 and whose MACs, params and modelled latency are its layers' gone, plus the
   latency model's own removal term for the unit; the MILP removes a unit whole (MDP's block
   binary). Removal is learnt like the rest: the first solve uses the prior, every outcome
   refits γ, and the latency table's removal entries (one unit removed, the rest dense) teach
   the latency model what each removal saves.
3. **Solve.** ``agents.knapsack_solve.Knapsack``: a MILP (HiGHS) that is exact for these costs.
4. **Refinement with real evaluations.** After the baseline and the first solve, each proposal
   is the MILP optimum under a Thompson sample of the weights (``exploration``: log-normal
   spread), inside a trust region around the best measured feasible policy (``radius`` level
   steps, L1; doubled after an improvement up to twice its start, halved after ``patience``
   misses, widened only when it holds no untried architecture), with every
   architecture already evaluated or pending cut off. When the first solve finds nothing the
   latency model fits (the fastest untried network is measured instead), the whole knapsack is
   solved again under the fitted weights as soon as outcomes have refitted the model: a region
   around the fastest network would keep the search far under the budget.

Every proposal meets MACs/params budgets by construction; latency budgets are met as modelled
and checked on the measured metrics (as for every agent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import lsq_linear

from agents.base import Agent
from agents.cost_model import (
    analytic_cost_model,
    is_int8,
    latency_cost_model,
    option_levels,
    unit_anchors,
)
from agents.knapsack_solve import Knapsack, Limit
from agents.latency_table import LatencyTable, LatencyTableRequest
from agents.types import AgentHints, Budget, Outcome, Proposal
from search_spaces.space import PRECISION_BITS, Policy, SearchSpace, bits_key

_DEFAULT_TABLE_RATIOS = LatencyTableRequest().ratios
# the model's error before any outcome is measured: about the spread of one latency measurement
# (docs/benchmarks.md, "The latency model refitted"), counted as this many outcomes
_PRIOR_SIGMA, _PRIOR_SIGMA_POINTS = 0.03, 2.0


def _option_ratios(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or not value or not all(isinstance(r, int | float) for r in value):
        raise ValueError(f"options.table_ratios must be a non-empty list of numbers, got {value!r}")
    return tuple(float(r) for r in value)


class KnapsackAgent(Agent):
    """Baseline, the knapsack allocation, then trust-region re-solves with refitted losses."""

    name = "knapsack"
    accepts_hints: ClassVar[bool] = True

    def __init__(
        self,
        space: SearchSpace,
        budget: Budget,
        *,
        seed: int = 0,
        hints: AgentHints | None = None,
        table_ratios: Sequence[float] = _DEFAULT_TABLE_RATIOS,
        radius: int = 4,
        patience: int = 3,
        exploration: float = 0.3,
        prior_points: float = 2.0,
        latency_margin: float = 0.0,
        latency_sigmas: float = 1.0,
        table_weight: float = 8.0,
        gap: float = 1e-4,
        time_limit: float = 10.0,
        int8_loss: float = 0.02,
        removal_loss: float = 1.0,
    ) -> None:
        super().__init__(space, budget, seed=seed)
        self.table_ratios = _option_ratios(table_ratios)
        for name, v, lo in (("radius", radius, 1), ("patience", patience, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"options.{name} must be an integer >= {lo}, got {v!r}")
        named = (
            ("exploration", exploration), ("prior_points", prior_points), ("latency_margin", latency_margin),
            ("latency_sigmas", latency_sigmas), ("table_weight", table_weight),
            ("gap", gap), ("time_limit", time_limit), ("int8_loss", int8_loss),
            ("removal_loss", removal_loss),
        )
        for name, x in named:
            if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x) or x < 0:
                raise ValueError(f"options.{name} must be a number >= 0, got {x!r}")
        self.start_radius = radius
        self.patience = patience
        self.exploration = float(exploration)
        self.prior_points = float(prior_points)
        self.latency_margin = float(latency_margin)
        self.latency_sigmas = float(latency_sigmas)
        self.table_weight = float(table_weight) or 1e-6
        self.gap, self.time_limit = float(gap), float(time_limit) or 1.0
        self.int8_loss = float(int8_loss)
        self.removal_loss = float(removal_loss)
        self.anchors = unit_anchors(space)  # unit -> the group whose 0 option removes it
        self.table: LatencyTable | None = (hints or AgentHints()).latency_table
        self._seed_latency_model()
        self.levels = option_levels(space)
        self.features = {g.name: self._loss_features(g.name) for g in space.groups}
        # search state (all of it in extra_state)
        self._history: list[dict[str, Any]] = []  # told outcomes, in the order told
        self._radius = radius
        self._misses = 0
        self._best: float | None = None  # best measured feasible quality
        self._prior_done = False
        # the first allocation found nothing the latency model fits: solved again, without a
        # trust region, once outcomes have refitted the model (tried once per new outcome batch)
        self._resolve_pending = False
        self._resolved_at = 0  # len(history) at the last such solve
        self._resolve_tries = 0
        self._predicted: dict[int, float] = {}  # modelled latency ratio of pending proposals
        self._build()

    @classmethod
    def hint_requests(cls, budget: Budget, options: Mapping[str, Any]) -> list[LatencyTableRequest]:
        """A latency table when the budget bounds latency (MACs/params need no measurement)."""
        if not budget.uses_latency:
            return []
        return [LatencyTableRequest(_option_ratios(options.get("table_ratios", _DEFAULT_TABLE_RATIOS)))]

    # --- model ---------------------------------------------------------------------------------
    def _loss_features(self, group: str) -> list[float]:
        """ℓ_g(k) per level: the share of the group's importance that keeping k channels removes
        (0 at the 0 option of a group inside a unit: the unit's removal weighs ``γ_u`` instead)."""
        g = self.space.group(group)
        imp = sorted(g.importance) if len(g.importance) == g.channels else [1.0] * g.channels
        total = sum(imp) or 1.0
        return [sum(imp[: g.channels - k]) / total if k else 0.0 for k in self.levels[group]]

    def _build(self) -> None:
        """The solver for the current latency model (MACs/params budgets the space cannot meet
        were refused by ``BudgetFit`` already)."""
        b, limits = self.budget, []
        if b.macs_ratio is not None:
            limits.append(Limit("macs_ratio", analytic_cost_model(self.space, "macs"), b.macs_ratio))
        if b.params_ratio is not None:
            limits.append(Limit("params_ratio", analytic_cost_model(self.space, "params"), b.params_ratio))
        self._latency_model = latency_cost_model(self.space, self.fit.latency) if b.uses_latency else None
        bound = self._latency_bound()
        self._cost_limits = list(limits)  # MACs/params only: what ``_fastest_untried`` keeps
        if self._latency_model is not None and bound is not None:
            bound -= self.latency_margin + self.latency_sigmas * self._latency_sigma()
            limits.append(Limit("latency", self._latency_model, bound))
        self.solver = Knapsack(self.space, limits)

    def _fastest_untried(self, taken: list[dict[str, int]]) -> dict[str, int] | None:
        """The untried network the latency model puts fastest, within the MACs/params limits
        (None without a latency budget). Built only when needed: rarely, and a solver build per
        ``tell`` is not free on 30 groups."""
        model = self._latency_model
        if model is None or self._latency_bound() is None:
            return None
        # the latency row at an infinite bound: the MILP gets the model's product variables
        solver = Knapsack(self.space, [*self._cost_limits, Limit("latency", model, math.inf)])
        return solver.cheapest(model, exclude=taken, time_limit=self.time_limit)

    def _latency_bound(self) -> float | None:
        """The latency budget as a ratio to dense (None: not known yet)."""
        b, bounds = self.budget, []
        if b.latency_ratio is not None:
            bounds.append(b.latency_ratio)
        if b.latency_ms is not None:
            dense_ms = self.table.dense_ms if self.table is not None else self.fit.latency.dense_ms
            if dense_ms:
                bounds.append(b.latency_ms / dense_ms)
        return min(bounds) if bounds else None

    def _seed_latency_model(self) -> None:
        """The table's entries as the latency model's first points (before any outcome)."""
        if self.table is None or not self.budget.uses_latency or self.fit.latency.points:
            return
        self.fit.latency.add_points(self.table.points(self.space), total_weight=self.table_weight)
        self.fit.latency.dense_ms = self.fit.latency.dense_ms or self.table.dense_ms
        self.fit.invalidate()  # the baseline's uniform fill follows the fitted model too

    def _latency_sigma(self) -> float:
        """How far measured latency ran over the model's prediction (made before the measurement;
        RMS, a network that measured faster counting 0: only misses over the bound hurt), shrunk
        toward the spread of one measurement."""
        errors = [
            max(0.0, r["latency_ratio"] - r["predicted_latency"])
            for r in self._history
            if r.get("latency_ratio") is not None and r.get("predicted_latency") is not None
        ]
        total = _PRIOR_SIGMA_POINTS * _PRIOR_SIGMA**2 + sum(e * e for e in errors)
        return math.sqrt(total / (_PRIOR_SIGMA_POINTS + len(errors)))

    def _kept(self, record: Mapping[str, Any]) -> dict[str, int]:
        kept = dict(zip(self.space.names, record["kept"], strict=True))
        return self._with_int8(kept, record.get("int8", ()))

    def _with_int8(self, kept: Mapping[str, int], groups: Sequence[str]) -> dict[str, int]:
        """An assignment: kept channels, ``bits_key(g): 8`` for the int8 groups."""
        return {**kept, **{bits_key(g): PRECISION_BITS["int8"] for g in groups}}

    def _assignment_of(self, policy: Mapping[str, float]) -> dict[str, int]:
        return self._with_int8(self._kept_of(policy), self.space.int8_groups(policy))

    def _kept_of(self, policy: Mapping[str, float]) -> dict[str, int]:
        """Kept channels per group, 0 for the groups of a removed unit (its removal option)."""
        kept = self.space.kept(policy)
        for g in self.space.removed_groups(policy):
            kept[g] = 0
        return kept

    def _removed(self, kept: Mapping[str, float]) -> list[str]:
        """The units an assignment removes (their groups at the 0 option)."""
        return [u for u, g in self.anchors.items() if int(kept[g]) == 0]

    def weights(self) -> np.ndarray:
        """α_g fitted on the evaluated outcomes (equal when there is nothing to fit)."""
        return self._loss_weights()[0]

    def int8_weights(self) -> np.ndarray:
        """β_g, each group's modelled quality loss in int8 (the prior ``int8_loss`` times the
        common scale until evaluations say otherwise; zeros in a space without int8)."""
        return self._loss_weights()[1]

    def removal_weights(self) -> np.ndarray:
        """γ_u, each removable unit's modelled quality loss when removed (in ``anchors`` order;
        empty in a space without depth)."""
        return self._loss_weights()[2]

    def _removal_prior(self) -> np.ndarray:
        """γ's prior on the scale of one ℓ: ``removal_loss`` times the unit's number of groups."""
        return np.array([self.removal_loss * len(self.space.unit(u).groups) for u in self.anchors])

    def _loss_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(α, β, γ) fitted together on the evaluated outcomes:
        quality ≈ c − Σ α_g ℓ_g − Σ β_g [g int8] − Σ γ_u [u removed]."""
        names, joint = self.space.names, self.space.quantizable
        n, units = len(names), list(self.anchors)
        done = sorted((r for r in self._history if r["quality"] is not None), key=lambda r: r["trial_id"])
        if len(done) < 2:
            return np.ones(n), np.full(n, self.int8_loss if joint else 0.0), self._removal_prior()
        x = np.array([[self.features[g][self.levels[g].index(k)] for g, k in zip(names, r["kept"], strict=True)] for r in done])
        y = np.array([r["quality"] for r in done])
        total = x.sum(axis=1)
        if units:  # a removal counts in the common scale as its prior's share of importance
            d = np.array([[float(int(self._kept(r)[self.anchors[u]]) == 0) for u in units] for r in done])
            total = total + d @ self._removal_prior()
        # common scale: quality ≈ c − a·Σℓ (a >= 0); the per-group weights are shrunk toward it
        spread = float(np.var(total))
        a = max(0.0, -float(np.cov(total, y, bias=True)[0, 1]) / spread) if spread > 1e-12 else 0.0
        a = a or max(float(np.ptp(y)), 1e-3) / max(float(np.ptp(total)), 1e-3)
        prior = np.full(n, a)
        if joint:  # one int8 indicator per group, shrunk toward a small loss on the same scale
            q = np.array([[float(g in set(r.get("int8", ()))) for g in names] for r in done])
            x, prior = np.hstack([x, q]), np.concatenate([prior, np.full(n, self.int8_loss * a)])
        if units:  # one removal indicator per unit, shrunk toward its prior on the same scale
            x, prior = np.hstack([x, d]), np.concatenate([prior, a * self._removal_prior()])
        k = x.shape[1]
        lam = self.prior_points * np.maximum(x.var(axis=0), 1e-4)
        rows = np.vstack([np.hstack([np.ones((len(y), 1)), -x]), np.hstack([np.zeros((k, 1)), np.diag(np.sqrt(lam))])])
        rhs = np.concatenate([y, np.sqrt(lam) * prior])
        lo = np.concatenate([[-np.inf], np.zeros(k)])
        sol = lsq_linear(rows, rhs, bounds=(lo, np.full(k + 1, np.inf)))
        alpha = np.maximum(sol.x[1 : n + 1], 1e-6)
        beta = np.maximum(sol.x[n + 1 : 2 * n + 1], 0.0) if joint else np.zeros(n)
        gamma = np.maximum(sol.x[k + 1 - len(units):], 0.0) if units else np.zeros(0)
        return alpha, beta, gamma

    # --- proposals -----------------------------------------------------------------------------
    def _incumbent(self) -> dict[str, int] | None:
        """Kept channels of the best measured feasible policy (else the least violating one)."""
        ok = [r for r in self._history if r["quality"] is not None]
        if not ok:
            return None
        feasible = [r for r in ok if r["violation"] <= 1e-9]
        best = (
            max(feasible, key=lambda r: (r["quality"], -r["trial_id"]))
            if feasible
            else min(ok, key=lambda r: (r["violation"], r["trial_id"]))
        )
        return self._kept(best)

    def _taken(self) -> list[dict[str, int]]:
        """Architectures evaluated or pending: cut off from every solve."""
        out = [self._kept(r) for r in self._history]
        for p in self.outstanding():
            out.append(self._assignment_of(p.policy))
        return out

    def _policy(self, kept: Mapping[str, int]) -> Policy:
        space = self.space
        widths = {g: space.ratio_for(g, kept[g]) if kept[g] else 0.0 for g in space.names}
        policy = space.with_int8(widths, [g for g in space.names if is_int8(kept, g) and kept[g]])
        removed = self._removed(kept)
        return space.round(space.with_removed(policy, removed)) if removed else policy

    def _values(self, alpha: np.ndarray, beta: np.ndarray, gamma: np.ndarray) -> dict[str, list[float]]:
        """Each group's modelled quality per solver option: −α_g·ℓ_g(level), less β_g in int8,
        and −γ_u at the 0 option of unit u's anchor group (the unit removed)."""
        out = {}
        for g, a, b in zip(self.space.names, alpha, beta, strict=True):
            fp32 = [-a * v for v in self.features[g]]
            out[g] = fp32 + [v - b for v in fp32] if self.space.quantizable else fp32
        for u, c in zip(self.anchors.items(), gamma, strict=True):
            out[u[1]][0] -= c
        return out

    def propose(self, n: int) -> list[Proposal]:
        out: list[Proposal] = []
        taken = self._taken()
        alpha, beta, gamma = self._loss_weights()
        while len(out) < n:
            rng = np.random.default_rng([self.seed, self._next_trial_id])
            if not self._prior_done:  # the knapsack allocation itself: equal weights, no region
                sample, sample8, center, role = np.ones(len(alpha)), beta, None, "knapsack"
                sample_d = self._removal_prior()  # on the scale of the equal weights
            else:
                sample = alpha * np.exp(self.exploration * rng.standard_normal(len(alpha)))
                sample8 = beta
                if self.space.quantizable:  # drawn only here: an fp32 search's draws stay as they were
                    sample8 = beta * np.exp(self.exploration * rng.standard_normal(len(beta)))
                sample_d = gamma
                if len(gamma):  # drawn only with depth, after the others: other draws stay as they were
                    sample_d = gamma * np.exp(self.exploration * rng.standard_normal(len(gamma)))
                center, role = self._incumbent(), "refine"
            kept = None
            if center is not None and self._resolve_due():
                # the knapsack allocation fell back to the fastest network; now that measurements
                # moved the latency model, the allocation itself under the fitted weights
                self._resolved_at, self._resolve_tries = len(self._history), self._resolve_tries + 1
                kept = self._solve(self._values(alpha, beta, gamma), None, taken)
                if kept is not None:
                    role, self._resolve_pending = "knapsack", False
            if kept is None:
                kept = self._solve(self._values(sample, sample8, sample_d), center, taken)
            if kept is None:
                # Nothing untried fits the latency model. The model extrapolates worst at the
                # narrowest widths (fitted on one-group cuts it overestimates them: docs/
                # benchmarks.md, "The latency model refitted"), so measure the fastest untried
                # network rather than end the search on the model's word.
                kept, role = self._fastest_untried(taken), "fastest"
            if kept is None:
                break  # every architecture the budget allows was tried
            if not self._prior_done and role == "fastest":
                self._resolve_pending = True
            self._prior_done = True
            taken.append(kept)
            proposal = self._proposal(self._policy(kept), role=role, radius=self._radius)
            if self._latency_model is not None:
                self._predicted[proposal.trial_id] = self._latency_model.value(self.space, kept)
            out.append(proposal)
        return out

    def _resolve_due(self) -> bool:
        """Whether to solve the whole knapsack again: the first allocation fell back to the
        fastest network, and outcomes have come back since the last try (at most ``patience``
        tries: proving the MILP infeasible is its slowest case)."""
        return self._resolve_pending and len(self._history) > self._resolved_at and self._resolve_tries < self.patience

    def _solve(
        self, values: Mapping[str, list[float]], center: Mapping[str, int] | None, taken: list[dict[str, int]]
    ) -> dict[str, int] | None:
        if center is None:
            return self.solver.solve(values, exclude=taken, time_limit=self.time_limit, gap=self.gap)
        widest = sum(len(lv) - 1 for lv in self.levels.values())
        while True:  # widen the region until it holds an untried feasible architecture
            if self._radius <= 2 and not self._region_has_room(center, taken):
                # a small region used up: skip the MILP (proving it infeasible is its slowest case)
                self._radius = min(widest, 2 * self._radius)
                continue
            kept = self.solver.solve(
                values, center=center, radius=self._radius, exclude=taken, time_limit=self.time_limit, gap=self.gap
            )
            if kept is not None or self._radius >= widest:
                return kept
            self._radius = min(widest, 2 * self._radius)  # kept: the small region is used up

    def _region_has_room(self, center: Mapping[str, int], taken: list[dict[str, int]]) -> bool:
        """Whether some untried architecture within ``self._radius`` steps of ``center`` fits."""
        solver, names = self.solver, self.space.names
        seen = {tuple(solver.option(g, k) for g in names) for k in taken}
        pos = [solver.option(g, center) for g in names]

        def walk(i: int, left: int, idx: list[int]) -> bool:
            if i == len(names):
                kept = solver.assignment(dict(zip(names, idx, strict=True)))
                return tuple(idx) not in seen and not solver.violated(kept)
            g = names[i]
            # nearest options first (the answer is the same in any order, found sooner)
            near = sorted(range(len(solver.options[g])), key=lambda j: (solver.steps(g, pos[i], j), j))
            for j in near:
                d = solver.steps(g, pos[i], j)
                if d <= left and walk(i + 1, left - d, [*idx, j]):
                    return True
            return False

        return walk(0, self._radius, [])

    def observe(self, outcomes: list[Outcome]) -> None:
        for o in sorted(outcomes, key=lambda o: o.trial_id):
            m = o.metrics
            record: dict[str, Any] = {
                "trial_id": o.trial_id,
                "kept": [self._kept_of(o.policy)[g] for g in self.space.names],
                **({"int8": self.space.int8_groups(o.policy)} if self.space.quantizable else {}),
                "quality": None if m is None or math.isnan(m.quality) else float(m.quality),
                "latency_ratio": None if m is None else m.latency_ratio,
                "violation": None if m is None else max(self.budget.violations(m), default=0.0),
                "predicted_latency": self._predicted.pop(o.trial_id, None),
            }
            self._history.append(record)
            if record["quality"] is None:
                continue
            if record["violation"] <= 1e-9 and (self._best is None or record["quality"] > self._best + 1e-9):
                if self._best is not None:  # TuRBO-style: grow on success, up to twice the start
                    self._radius = min(2 * self._radius, 2 * self.start_radius)
                self._best, self._misses = record["quality"], 0
            elif o.trial_id != self.baseline_trial_id:
                self._misses += 1
                if self._misses >= self.patience:
                    self._radius, self._misses = max(1, self._radius // 2), 0
        if self._latency_model is not None:
            self._build()  # the latency correction moved

    # --- state ---------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {
            "history": self._history,
            "radius": self._radius,
            "misses": self._misses,
            "best": self._best,
            "prior_done": self._prior_done,
            "resolve": [self._resolve_pending, self._resolved_at, self._resolve_tries],
            "predicted": {str(t): v for t, v in self._predicted.items()},
            "latency_table": None if self.table is None else self.table.to_dict(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._history = [dict(r) for r in state.get("history", [])]
        self._radius = int(state.get("radius", self.start_radius))
        self._misses = int(state.get("misses", 0))
        self._best = state.get("best")
        self._prior_done = bool(state.get("prior_done", False))
        pending, at, tries = state.get("resolve", [False, 0, 0])
        self._resolve_pending, self._resolved_at, self._resolve_tries = bool(pending), int(at), int(tries)
        self._predicted = {int(t): float(v) for t, v in state.get("predicted", {}).items()}
        if state.get("latency_table") is not None:  # the table the search used, not a re-measure
            self.table = LatencyTable.from_dict(state["latency_table"])
        self._build()
