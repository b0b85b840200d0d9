"""``optuna-tpe`` and ``optuna-nsga2``: Optuna's samplers behind the ask/tell interface.

Each trial samples one ratio per group (``r:<group>`` in [0, max_ratio]), in a space with
int8 one precision per group (``p:<group>``, categorical) and, in a space with depth, one keep
per unit (``k:<unit>``, categorical 1 = kept / 0 = removed, decided into ``keep_key(unit)``; a
removed unit's groups' ratios and precisions are sampled but ignored); the agent proposes that
sample *projected* onto the MACs/params budget (``BudgetFit.project``). Optuna is told the raw
sample with the quality of its projection: the objective it sees is ``f(project(x))``, a
deterministic function of what it sampled, so the sampler's model stays consistent (telling it the
projected values instead would pile its density on the budget boundary in ways it did not sample).

* TPE maximises quality; measured budget violations (latency, and MACs/params as measured) are
  Optuna constraints (``Trial.set_constraint``), so infeasible trials rank below feasible ones.
  In a joint space (int8 or depth) a share of its trials (``mutation_share``) are mutations of
  the best feasible trial so far, enqueued into the study: TPE draws each group's precision
  and keep independently, so a structure like "every group int8" that quantize + uniform-fill
  finds at once is almost never drawn again (p^12 for twelve groups), and a few feasible fp32
  trials then fill TPE's good set; a mutation keeps the structure and moves a little of it.
* NSGA-II maximises quality and minimises cost: measured ``latency_ms`` when the evaluator
  measured it, else the MACs ratio; the same constraints apply. Its samples are only projected
  when over budget (no fill), so the front spans costs below the budget. Its first generation
  opens with the uniform-fill sweep below the budget (``sweep_points``, ``BudgetFit.sweep``):
  the front starts from the baseline's trade-off curve and evolves away from it.

The study lives in memory, or in SQL when ``storage`` is given (``load_if_exists``: a search
resumes). Determinism: the sampler is re-created before every ``ask`` with a seed derived from
(seed, trials so far), so proposals depend only on the seed and the history — which is also what
``state_dict`` stores, so a restored agent proposes exactly what the original would have.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from agents.base import Agent
from agents.budget_fit import BudgetFit
from agents.types import Budget, Outcome, Proposal
from search_spaces.space import (
    BITS_SUFFIX,
    KEEP_SUFFIX,
    PRECISION_BITS,
    SearchSpace,
    bits_key,
    is_bits_key,
    is_keep_key,
    keep_key,
)

optuna.logging.set_verbosity(logging.WARNING)


class _OptunaAgent(Agent):
    directions: tuple[Any, ...] = ("maximize",)
    fill_budget = True  # project onto the budget boundary (TPE) or only below it (NSGA-II)
    default_sweep_points = 0  # uniform-fill sweep points enqueued as the first samples
    default_mutation_share = 0.0  # in a joint space: trials proposed as mutations of the incumbent
    #: a mutation jitters every width ratio by this standard deviation (before the projection
    #: back onto the budget, so what moves is the allocation's shape) and flips each group's
    #: precision and each unit's keep with probability one over their number (one flip expected)
    MUTATION_SIGMA = 0.1

    def __init__(
        self,
        space: SearchSpace,
        budget: Budget,
        *,
        seed: int = 0,
        storage: str | None = None,
        study_name: str | None = None,
        sweep_points: int | None = None,
        mutation_share: float | None = None,
        **sampler_options: Any,
    ) -> None:
        super().__init__(space, budget, seed=seed)
        if storage is not None and not isinstance(storage, str):
            raise ValueError("options.storage must be a SQL URL string")
        points = self.default_sweep_points if sweep_points is None else sweep_points
        if not isinstance(points, int) or not 0 <= points <= 100:
            raise ValueError(f"options.sweep_points must be an integer in [0, 100], got {points!r}")
        share = self.default_mutation_share if mutation_share is None else mutation_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
            raise ValueError(f"options.mutation_share must be a number in [0, 1], got {share!r}")
        # only where the baselines are trials of the study too: a widths-only space searches as before
        joint = space.quantizable or space.depth
        if mutation_share and not joint:
            raise ValueError("options.mutation_share needs a joint space (search_space.precision with "
                             "int8, or search_space.depth): a widths-only search has no mutations")
        self.mutation_share = float(share) if joint else 0.0
        baseline = space.signature(self.fit.uniform_fill())  # asked anyway, first
        self._sweep = [p for p in self.fit.sweep(points) if space.signature(p) != baseline]
        self.storage = storage
        self.study_name = study_name or f"autoprune-{self.name}-{seed}"
        self.sampler_options = sampler_options
        self._make_sampler(0)  # checks the sampler options now, not at the first ask
        self.study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            directions=list(self.directions),
            load_if_exists=storage is not None,
            sampler=self._make_sampler(0),
        )
        self._dists: dict[str, BaseDistribution] = {f"r:{g.name}": FloatDistribution(0.0, space.max_ratio) for g in space.groups}
        if space.quantizable:  # each group's precision a categorical beside its ratio
            self._dists.update({f"p:{g.name}": CategoricalDistribution(list(space.precisions)) for g in space.groups})
        if space.depth:  # each unit kept (1) or removed (0), beside the widths
            self._dists.update({f"k:{u.name}": CategoricalDistribution([1, 0]) for u in space.units})
        self._live: dict[int, optuna.Trial] = {}  # our trial id -> Optuna trial asked this run
        self._raw: dict[int, dict[str, float]] = {}  # our trial id -> raw sample, until told
        self._history: list[dict[str, Any]] = []  # told trials (to rebuild an in-memory study)

    # --- sampler ------------------------------------------------------------------------------
    def _make_sampler(self, n_trials: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def _derived_seed(self, n_trials: int) -> int:
        return (self.seed * 1_000_003 + n_trials * 7919) % (2**31 - 1)

    # --- ask/tell -----------------------------------------------------------------------------
    def propose(self, n: int) -> list[Proposal]:
        out: list[Proposal] = []
        while len(out) < n:
            asked = len(self.study.get_trials(deepcopy=False))
            if asked < len(self._sweep):  # a function of the history, like the sampler's seed
                top = self.space.max_ratio
                self.study.enqueue_trial({f"r:{g}": min(r, top) for g, r in self._sweep[asked].items()})
            mutation = self._mutation(asked) if asked >= len(self._sweep) else None
            fit = self.fit
            if mutation is not None:
                raw, fit, parent = mutation
                self.study.enqueue_trial(_params(raw))
            self.study.sampler = self._make_sampler(asked)
            trial = self.study.ask(self._dists)
            raw = _raw_policy(trial.params)
            info: dict[str, Any] = {"optuna_trial": trial.number}
            if mutation is not None:
                info["mutated_from"] = parent
            proposal = self._proposal(fit.project(raw, fill=self.fill_budget, grow=self.fill_budget), **info)
            trial.set_user_attr("autoprune_trial_id", proposal.trial_id)
            self._live[proposal.trial_id] = trial
            self._raw[proposal.trial_id] = raw
            out.append(proposal)
        return out

    def _baseline(self, role: str) -> Proposal:
        """In a space with int8 or depth, a baseline is told to the study as a completed trial
        too, so the sampler's model starts from the baselines (a joint width × precision × depth
        space is too large for a few trials to find what quantize + uniform-fill or depth-only
        already are)."""
        return self._told_to_study(super()._baseline(role))

    def _refit(self, role: str) -> Proposal | None:
        """A baseline placed again (``Agent.BASELINE_REFITS``) is told to the study like one."""
        proposal = super()._refit(role)
        return None if proposal is None else self._told_to_study(proposal)

    def _told_to_study(self, proposal: Proposal) -> Proposal:
        if self.space.quantizable or self.space.depth:
            self._raw[proposal.trial_id] = self._sample_of(proposal.policy)
        return proposal

    def _sample_of(self, policy: Mapping[str, float]) -> dict[str, float]:
        """A policy as a full sample of the study: every ratio, precision and keep."""
        space = self.space
        raw = {g.name: min(max(policy.get(g.name, 0.0), 0.0), space.max_ratio) for g in space.groups}
        if space.quantizable:
            int8 = set(space.int8_groups(policy))
            raw.update({bits_key(g.name): float(PRECISION_BITS["int8" if g.name in int8 else "fp32"])
                        for g in space.groups})
        if space.depth:
            removed = set(space.removed_units(policy))
            raw.update({keep_key(u.name): 0.0 if u.name in removed else 1.0 for u in space.units})
        return raw

    # --- mutations of the incumbent -----------------------------------------------------------
    def _incumbent(self) -> dict[str, Any] | None:
        """The best told trial that met the budget as measured (ties: the earliest)."""
        ok = [r for r in self._history if r["values"] is not None and r.get("policy") is not None
              and all(c <= 0 for c in r["constraints"])]
        return max(ok, key=lambda r: r["values"][0], default=None)

    def _mutation(self, asked: int) -> tuple[dict[str, float], BudgetFit, int] | None:
        """Whether trial ``asked`` is a mutation (a function of the seed and the history, like the
        sampler's seed) and if so the mutated sample, the fit that places it, and its parent.

        The sample is the incumbent's measured policy jittered (``MUTATION_SIGMA``, flips). It is
        placed under the budget less what the latency model under-predicted at the incumbent (a
        neighbour of a network the model thought cheaper than it measured is likely to be too)
        and less the incumbent's measured spread: a neighbour placed exactly on the budget is
        measured over it about half the time, and is then no candidate.
        """
        rng = np.random.default_rng([self.seed, asked, 0x6D75])
        if self.mutation_share <= 0.0 or rng.random() >= self.mutation_share:
            return None
        best = self._incumbent()
        if best is None:
            return None
        space, policy = self.space, best["policy"]
        raw = self._sample_of(policy)
        top = space.max_ratio
        for g in space.groups:
            raw[g.name] = float(np.clip(raw[g.name] + rng.normal(0.0, self.MUTATION_SIGMA), 0.0, top))
        if space.quantizable:
            bits = [PRECISION_BITS[p] for p in space.precisions]
            for g in space.groups:
                if rng.random() < 1.0 / len(space):
                    raw[bits_key(g.name)] = float(next(b for b in bits if b != raw[bits_key(g.name)]))
        if space.depth and space.units:
            for u in space.units:
                if rng.random() < 1.0 / len(space.units):
                    raw[keep_key(u.name)] = 1.0 - raw[keep_key(u.name)]
        margin = self._margin(best)
        fit = self.fit.with_latency_scaled(max(0.5, 1.0 - margin)) if margin > 0 else self.fit
        return raw, fit, int(best["trial_id"])

    def _margin(self, best: dict[str, Any]) -> float:
        """The share of the latency budget a mutation of ``best`` is placed under: the latency
        model's under-prediction at ``best`` over the bound (the worse of the budget's terms),
        plus ``best``'s measured spread; 0 without a latency term."""
        ratio, b = best.get("latency_ratio"), self.budget
        if ratio is None or not b.uses_latency:
            return 0.0
        under = max(0.0, ratio - self.fit.latency.predict_ratio(best["policy"]))
        shares = [0.0]
        if b.latency_ratio is not None:
            shares.append(under / b.latency_ratio)
        if b.latency_ms is not None and self.fit.latency.dense_ms:
            shares.append(under * self.fit.latency.dense_ms / b.latency_ms)
        return max(shares) + best.get("latency_spread", 0.0)

    def _values(self, outcome: Outcome) -> list[float]:
        m = outcome.metrics
        assert m is not None
        if len(self.directions) == 1:
            return [m.quality]
        cost = m.latency_ms if m.latency_ms is not None else m.macs_ratio
        return [m.quality, cost]

    def observe(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            raw = self._raw.pop(o.trial_id, None)
            if raw is None:  # a baseline in a widths-only fp32 space: not an Optuna sample
                continue
            values = self._values(o) if o.ok else None
            if values is not None and any(math.isnan(v) for v in values):
                values = None
            constraints = self.budget.violations(o.metrics) if o.metrics is not None else []
            record = {"trial_id": o.trial_id, "raw": raw, "values": values, "constraints": constraints}
            if self.mutation_share > 0 and values is not None:  # what a mutation starts from
                assert o.metrics is not None
                m = o.metrics
                record |= {"policy": dict(o.policy), "latency_ratio": m.latency_ratio}
                if m.latency_spread_ms is not None and m.latency_ms:  # the measurement's own noise
                    record["latency_spread"] = m.latency_spread_ms / m.latency_ms
            self._history.append(record)
            trial = self._live.pop(o.trial_id, None)
            if trial is None:  # asked before a restart: that Optuna trial is gone (or stale)
                self._add_trial(record)
                continue
            for i, c in enumerate(constraints):
                trial.set_constraint(f"c{i}", c)
            if values is None:
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self.study.tell(trial, values if len(values) > 1 else values[0])

    def _add_trial(self, record: dict[str, Any]) -> None:
        values = record["values"]
        frozen = optuna.trial.create_trial(
            state=TrialState.COMPLETE if values is not None else TrialState.FAIL,
            values=values,
            params=_params(record["raw"]),
            distributions=self._dists,
            user_attrs={"autoprune_trial_id": record["trial_id"]},
            constraints={f"c{i}": c for i, c in enumerate(record["constraints"])} if values is not None else None,
        )
        self.study.add_trial(frozen)

    # --- state --------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {
            "raw": {str(k): v for k, v in self._raw.items()},
            "history": self._history,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self._raw = {int(k): dict(v) for k, v in state.get("raw", {}).items()}
        self._history = [dict(r) for r in state.get("history", [])]
        self._live = {}
        if self.storage is None:  # rebuild the in-memory study from the told trials
            self.study = optuna.create_study(
                study_name=self.study_name, directions=list(self.directions), sampler=self._make_sampler(0)
            )
            for record in self._history:
                self._add_trial(record)
            return
        # SQL study: told trials are stored; trials left running by the old process are failed
        # (their proposals are replayed and, when told, added as completed trials).
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("autoprune_trial_id") in self._raw:
                self.study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)


def _raw_policy(params: dict[str, Any]) -> dict[str, float]:
    """An Optuna sample as a policy: ``r:<group>`` ratios, ``p:<group>`` precisions as bits,
    ``k:<unit>`` keeps (1 kept, 0 removed)."""
    raw: dict[str, float] = {}
    for name, value in params.items():
        kind, group = name[:2], name[2:]
        if kind == "p:":
            raw[bits_key(group)] = float(PRECISION_BITS[value])
        elif kind == "k:":
            raw[keep_key(group)] = float(value)
        else:
            raw[group] = float(value)
    return raw


def _params(raw: dict[str, float]) -> dict[str, Any]:
    """The inverse of :func:`_raw_policy` (a told trial added back to a rebuilt study)."""
    names = {bits: name for name, bits in PRECISION_BITS.items()}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if is_bits_key(k):
            out[f"p:{k.removesuffix(BITS_SUFFIX)}"] = names[int(v)]
        elif is_keep_key(k):
            out[f"k:{k.removesuffix(KEEP_SUFFIX)}"] = int(v)
        else:
            out[f"r:{k}"] = v
    return out


class TPEAgent(_OptunaAgent):
    """Optuna TPE, one objective (quality), the budget as constraints."""

    name = "optuna-tpe"
    directions = ("maximize",)
    default_mutation_share = 0.5

    def _make_sampler(self, n_trials: int) -> optuna.samplers.BaseSampler:
        opts = {"n_startup_trials": 10, "multivariate": True, **self.sampler_options}
        try:
            return optuna.samplers.TPESampler(seed=self._derived_seed(n_trials), **opts)
        except TypeError as exc:
            raise ValueError(f"options: not a TPESampler option: {exc}") from exc


class NSGA2Agent(_OptunaAgent):
    """Optuna NSGA-II, quality up and cost (latency_ms when measured, else MACs ratio) down."""

    name = "optuna-nsga2"
    directions = ("maximize", "minimize")
    fill_budget = False  # a front needs points below the budget, not only on it
    default_sweep_points = 8

    def _make_sampler(self, n_trials: int) -> optuna.samplers.BaseSampler:
        opts = {"population_size": 20, **self.sampler_options}
        try:
            return optuna.samplers.NSGAIISampler(seed=self._derived_seed(n_trials), **opts)
        except TypeError as exc:
            raise ValueError(f"options: not an NSGAIISampler option: {exc}") from exc
