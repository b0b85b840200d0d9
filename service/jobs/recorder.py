"""What a running job writes: each trial with its events and the updated front, the agent's
state, finalize's progress.

Every write is one transaction whose first statement is the lease fence (``fence(session)``
raises LeaseLost once another controller runs the job), retried while the database is away.
A trial's commit stays flat in cost: the new trial against the current front only, the count on
the index, its three events with one sequence read, and no load of the job row (what the
progress needs of it is read once, :class:`JobFacts`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from agents.types import Budget, Outcome, Proposal
from search_spaces.space import PolicyError, SearchSpace
from service.db import Database, repo
from service.db.models import JobRow
from service.errors import StorageError
from service.front import add_to_front
from service.views import Progress, Trial

log = logging.getLogger("autoprune.runner")

#: The fields of finalize's progress reports that the ``finalize`` event carries (not the policy
#: or the metrics, which the artifacts hold once they are written).
FINALIZE_PROGRESS_FIELDS = ("rank", "stage", "step", "steps", "prune_step", "prune_steps")


@dataclass(frozen=True)
class JobFacts:
    """What a running job's commits need of its row; none of it changes while it runs."""

    id: str
    cost_key: str
    trials_total: int
    started_at: datetime | None

    @classmethod
    def of(cls, job: JobRow) -> JobFacts:
        return cls(job.id, job.cost_key, job.trials_total, job.started_at)


class Recorder:
    """The ``on_outcome`` / ``on_state`` callbacks of one job's search, and its finalize events."""

    def __init__(self, db: Database, job: JobFacts, space: SearchSpace, budget: Budget, controller: str,
                 fence: Callable[[Session], None]) -> None:
        self.db, self.job, self.space, self.budget = db, job, space, budget
        # fence(session) runs first in every write: raises LeaseLost once another controller runs the job
        self.controller, self.fence = controller, fence

    def on_state(self, state: dict[str, Any]) -> None:
        def save(s: Session) -> None:
            self.fence(s)
            repo.save_agent_state(s, job_id=self.job.id, state=state)

        self.db.write_retrying(save, progress=True)

    def trial_fields(self, proposal: Proposal, outcome: Outcome, cached: bool) -> dict[str, Any]:
        """The trial row's columns: metrics, kept channels, feasibility against the budget."""
        m = outcome.metrics
        try:
            kept: dict[str, int] = self.space.kept(self.space.validate(outcome.policy))
        except PolicyError:
            kept = {}
        violations = self.budget.violations(m) if m is not None else []
        return {
            "state": "succeeded" if m is not None else "failed",
            "policy": dict(outcome.policy),
            "kept": kept,
            "metrics": m.to_dict() if m is not None else None,
            "quality": m.quality if m is not None else None,
            "macs": float(m.macs) if m is not None else None,
            "latency_ms": m.latency_ms if m is not None else None,
            "feasible": m is not None and self.budget.feasible(m),
            "violation": max(violations, default=0.0) if m is not None else None,
            "error": outcome.error,
            "node": m.node if m is not None else None,
            "info": dict(proposal.info),
            "cached": cached,
            "controller": self.controller,
        }

    def on_outcome(self, proposal: Proposal, outcome: Outcome, cached: bool) -> None:
        fields = self.trial_fields(proposal, outcome, cached)
        job = self.job

        def record(s: Session) -> None:
            self.fence(s)
            if repo.trial_exists(s, job_id=job.id, trial_id=outcome.trial_id):
                return  # already committed (before a restart, or by a retried write): never twice
            row = repo.add_trial(s, job_id=job.id, trial_id=outcome.trial_id, **fields)
            events: list[tuple[str, dict[str, Any]]] = [("trial", Trial.from_row(row).model_dump(mode="json"))]
            # the new trial against the current front only: the cost of a commit stays flat
            front = add_to_front(s, job_id=job.id, cost_key=job.cost_key, row=row)
            if front is not None:
                events.append(("front", {"trial_ids": front}))
            # the trial just stored is the latest to finish: only the count is read (an index count)
            seen = repo.TrialSummary(count=repo.count_trials(s, job_id=job.id), last_finished_at=row.finished_at)
            progress = Progress.counted("running", job.started_at, job.trials_total, seen)
            events.append(("progress", progress.model_dump(mode="json")))
            repo.add_events(s, job_id=job.id, events=events)

        self.db.write_retrying(record, progress=True)

    def on_finalize(self, report: Any) -> None:
        """A finalize progress report as a ``finalize`` event (the dashboard's progress line);
        progress is for show, so a database away does not fail finalize."""
        data = {k: report[k] for k in FINALIZE_PROGRESS_FIELDS if isinstance(report, dict) and k in report}

        def write(s: Session) -> None:
            self.fence(s)
            repo.add_event(s, job_id=self.job.id, type="finalize", data=data)

        try:
            self.db.write_retrying(write, progress=True)
        except StorageError:
            log.warning("job %s: finalize progress not recorded", self.job.id, exc_info=True)
