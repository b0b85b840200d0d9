"""The agent interface: how the next pruning policies are chosen.

Call order, one round at a time::

    agent = make_agent("ddpg", space, budget, seed=0)
    while not agent.finished:
        proposals = agent.ask(n)          # up to n policies ([] when the agent has nothing left)
        save(agent.state_dict())          # pending proposals are part of the state
        outcomes = evaluate(proposals)    # the caller's business: workers, in parallel
        agent.tell(outcomes)              # every proposal answered once, in any order
        save(agent.state_dict())          # JSON-serialisable; load_state_dict() resumes

Resume: an agent restored from a state saved after ``ask`` proposes the same pending proposals
(same trial ids, same policies) again before anything new, so a caller that stored some of their
outcomes can answer those from storage and evaluate only the rest: nothing lost, nothing twice.

Subclasses implement two hooks, ``propose`` and ``observe``; ``ask``/``tell`` do the bookkeeping.
Agents see the SearchSpace, the Budget and Metrics only: never a model, Ray or a database.
MACs and params budgets are met by construction (every proposal is feasible under the space's
analytic cost model); latency budgets are constraints checked on measured metrics.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

from agents.budget_fit import BudgetFit
from agents.types import Budget, Outcome, Proposal
from search_spaces.space import Policy, SearchSpace


class Agent(abc.ABC):
    name: ClassVar[str]
    #: ``ask`` opens with the uniform-fill baseline; only scripted agents (test doubles) opt out.
    proposes_baseline: ClassVar[bool] = True
    #: a pruned baseline measured off a latency budget is placed again by the refitted latency
    #: model, at most this many times: its uniform ratio came from a model that had not yet seen
    #: a whole network; a baseline just over the budget is no candidate for the search, and one
    #: far under it is no answer to "what does this allocation give at the budget"
    BASELINE_REFITS: ClassVar[int] = 2
    #: a baseline measured under the budget by more than this share of it is placed again too
    BASELINE_UNDERSHOOT: ClassVar[float] = 0.1
    #: ``make_agent`` passes ``hints=AgentHints(...)`` to agents that take measurements up front.
    accepts_hints: ClassVar[bool] = False

    def __init__(self, space: SearchSpace, budget: Budget, *, seed: int = 0) -> None:
        self.space = space
        self.budget = budget
        self.seed = seed
        self._next_trial_id = 0
        self._pending: dict[int, Proposal] = {}  # asked, not yet told
        self._replay: list[Proposal] = []  # pending proposals restored by load_state_dict
        self._baseline_trial_id: int | None = None  # set once the uniform-fill baseline is asked
        self._baselines_asked = 0  # how many of ``baselines()`` were asked
        self._baseline_roles: dict[int, str] = {}  # trial id -> role, baselines and their refits
        self._refits_due: list[str] = []  # roles measured over a latency budget, to place again
        self._baseline_signatures: dict[str, list[str]] = {}  # role -> its architectures asked
        self._refit_scale: dict[str, float] = {}  # role -> the budget's factor for its next placement
        # The budget rules every agent shares (raises BudgetError when the budget is unreachable).
        self.fit = BudgetFit(space, budget)

    @classmethod
    def hint_requests(cls, budget: Budget, options: Mapping[str, Any]) -> list[Any]:
        """What workers should measure for this agent before the search (``workers.hints``):
        e.g. a ``LatencyTableRequest``. Most agents need nothing."""
        return []

    # --- what subclasses implement ------------------------------------------------------------
    @abc.abstractmethod
    def propose(self, n: int) -> list[Proposal]:
        """Up to ``n`` new proposals, each made with ``self._proposal(policy, **info)``.

        Called only after the baseline was asked (``ask`` proposes it first, for every agent).
        """

    @abc.abstractmethod
    def observe(self, outcomes: list[Outcome]) -> None:
        """Learn from finished proposals (failed ones carry ``error`` and no metrics)."""

    @property
    def finished(self) -> bool:
        """True when the agent will propose nothing more (a sweep that is done, say)."""
        return False

    def extra_state(self) -> dict[str, Any]:
        """Subclass state for resume (JSON-serialisable); the default has none."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restores what ``extra_state`` returned."""

    # --- the public interface -----------------------------------------------------------------
    def ask(self, n: int) -> list[Proposal]:
        """Up to ``n`` policies to evaluate: restored pending ones first, then new ones."""
        out, self._replay = self._replay[:n], self._replay[n:]
        if len(out) < n and not self._replay:
            if self.proposes_baseline:  # the first proposals
                roles = self.baselines()
                while len(out) < n and self._baselines_asked < len(roles):
                    out.append(self._baseline(roles[self._baselines_asked]))
            while len(out) < n and self.baselines_done and self._refits_due:
                refit = self._refit(self._refits_due.pop(0))
                if refit is not None:
                    out.append(refit)
            if len(out) < n and self.baselines_done:
                # pending before ``propose`` runs, so it sees this batch's earlier proposals too
                self._pending.update((p.trial_id, p) for p in out)
                out += self.propose(n - len(out))
        for p in out:
            self._pending[p.trial_id] = p
        return out

    def tell(self, outcomes: list[Outcome]) -> None:
        """Results for earlier proposals, in any order."""
        for o in outcomes:
            if o.trial_id not in self._pending:
                raise ValueError(f"trial {o.trial_id} was not asked or was already told")
        for o in outcomes:
            del self._pending[o.trial_id]
            role = self._baseline_roles.get(o.trial_id)
            if (role is not None and role != "quantize-only" and o.metrics is not None
                    and self.budget.uses_latency and self._refits(role) < self.BASELINE_REFITS
                    and role not in self._refits_due):
                on_budget = self._on_budget_by(o)
                if not self.budget.feasible(o.metrics) or on_budget > 1 / (1 - self.BASELINE_UNDERSHOOT):
                    self._refits_due.append(role)
                    # the next placement aims off the budget by the share this one missed it by
                    # (a ridge-shrunk model moves only part of the way toward one new point),
                    # never above the budget itself
                    self._refit_scale[role] = min(1.0, self._refit_scale.get(role, 1.0) * on_budget)
        self.fit.observe(outcomes)
        self.observe(outcomes)

    def baselines(self) -> list[str]:
        """The roles of the zero-search proposals every agent makes first, so every front and
        report holds them: ``baseline`` (uniform-fill), in a space with int8 ``quantize-only``
        and ``quantize+uniform-fill``, and in a space with depth ``depth-only``
        (``BudgetFit.depth_only``: units removed, uniform width)."""
        roles = ["baseline"]
        if self.space.quantizable:
            roles += ["quantize-only", "quantize+uniform-fill"]
        if self.space.depth:
            roles.append("depth-only")
        return roles

    @property
    def baselines_done(self) -> bool:
        return not self.proposes_baseline or self._baselines_asked >= len(self.baselines())

    def _baseline_policy(self, role: str, fit: BudgetFit | None = None) -> Policy:
        fit = fit or self.fit
        return {
            "baseline": fit.uniform_fill,
            "quantize-only": fit.quantize_only,
            "quantize+uniform-fill": fit.quantized_uniform_fill,
            "depth-only": fit.depth_only,
        }[role]()

    def _on_budget_by(self, outcome: Outcome) -> float:
        """The factor that would have put ``outcome``'s measured latency on the budget (the
        tighter term): < 1 when it measured over, > 1 under."""
        m, b, factors = outcome.metrics, self.budget, []
        assert m is not None
        if b.latency_ratio is not None and m.latency_ratio:
            factors.append(b.latency_ratio / m.latency_ratio)
        if b.latency_ms is not None and m.latency_ms:
            factors.append(b.latency_ms / m.latency_ms)
        return min(factors, default=1.0)

    def _baseline(self, role: str) -> Proposal:
        proposal = self._proposal(self._baseline_policy(role), role=role)
        if role == "baseline":
            self._baseline_trial_id = proposal.trial_id
        self._baselines_asked += 1
        self._baseline_roles[proposal.trial_id] = role
        self._baseline_signatures[role] = [self.space.signature(proposal.policy)]
        return proposal

    def _refit(self, role: str) -> Proposal | None:
        """``role``'s baseline placed again by the latency model that has now seen it measured
        off the budget (over it, or far under it), under the budget scaled by the share each
        placement missed it by: a search candidate like any other (the report's baseline stays
        the first one, which finalize places at the best found's delivered latency). None when
        it lands where it was (e.g. already at ``max_ratio``)."""
        policy = self._baseline_policy(role, self.fit.with_latency_scaled(self._refit_scale[role]))
        signature = self.space.signature(policy)
        if signature in self._baseline_signatures[role]:
            return None  # nothing more comes back for this role: no further refit either
        self._baseline_signatures[role].append(signature)
        proposal = self._proposal(policy, role=f"{role} refit", refit=self._refits(role))
        self._baseline_roles[proposal.trial_id] = role
        return proposal

    def _refits(self, role: str) -> int:
        """How many times ``role``'s baseline was placed again."""
        return len(self._baseline_signatures[role]) - 1

    @property
    def has_replay(self) -> bool:
        """True while proposals restored by ``load_state_dict`` still wait to be asked again:
        an agent whose own sweep is done is not ``finished`` until they are."""
        return bool(self._replay)

    def outstanding(self) -> list[Proposal]:
        """Proposals asked and not yet told, restored ones not yet asked again included."""
        return [*self._pending.values(), *self._replay]

    @property
    def baseline_trial_id(self) -> int | None:
        """Trial id of the baseline proposal, once ``ask`` has made it."""
        return self._baseline_trial_id

    def _proposal(self, policy: Policy, **info: Any) -> Proposal:
        proposal = Proposal(self._next_trial_id, policy, info)
        self._next_trial_id += 1
        return proposal

    def state_dict(self) -> dict[str, Any]:
        pending = sorted(self._pending.values(), key=lambda p: p.trial_id)
        return {
            "agent": self.name,
            "next_trial_id": self._next_trial_id,
            "baseline_trial_id": self._baseline_trial_id,
            "baselines_asked": self._baselines_asked,
            "baseline_roles": {str(t): r for t, r in self._baseline_roles.items()},
            "refits_due": list(self._refits_due),
            "baseline_signatures": {r: list(v) for r, v in self._baseline_signatures.items()},
            "refit_scale": dict(self._refit_scale),
            "pending": [{"trial_id": p.trial_id, "policy": p.policy, "info": p.info} for p in pending],
            "extra": self.extra_state(),
            "latency_model": self.fit.latency.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("agent") not in (None, self.name):
            raise ValueError(f"state belongs to agent {state.get('agent')!r}, not {self.name!r}")
        self._next_trial_id = int(state["next_trial_id"])
        baseline = state.get("baseline_trial_id")
        self._baseline_trial_id = None if baseline is None else int(baseline)
        self._baselines_asked = int(state.get("baselines_asked", 0 if baseline is None else 1))
        self._baseline_roles = {int(t): str(r) for t, r in state.get("baseline_roles", {}).items()}
        self._refits_due = [str(r) for r in state.get("refits_due", [])]
        self._baseline_signatures = {str(r): [str(x) for x in v] for r, v in state.get("baseline_signatures", {}).items()}
        self._refit_scale = {str(r): float(x) for r, x in state.get("refit_scale", {}).items()}
        self._pending = {}
        self._replay = [Proposal(int(p["trial_id"]), dict(p["policy"]), dict(p["info"])) for p in state["pending"]]
        self.fit.latency.load_state_dict(state.get("latency_model", {}))
        self.fit.invalidate()
        self.load_extra_state(state.get("extra", {}))
