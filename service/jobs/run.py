"""One job's orchestration on this controller: launch → search → finalize → final state.

A job resumes wherever it stopped: the agent is rebuilt, its saved state loaded, and the stored
outcomes passed by trial id, so nothing finished is evaluated or stored twice; a job stopped
while finalizing finalizes again. Every write is fenced by the job's lease (:mod:`.leases`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from agents.types import Budget, Outcome
from service.config import Settings
from service.db import Database, repo
from service.db.models import JobRow
from service.jobs.candidates import BASELINE_ROLES, artifact_fields, finalize_candidates, outcome_of
from service.jobs.leases import Leases
from service.jobs.recorder import JobFacts, Recorder
from service.launcher import Launched, Launcher
from service.states import JobState
from workers.spec import JobSpec


def end_job(s: Session, leases: Leases, job: JobRow, state: str, error: str | None = None) -> None:
    """The final state and the lease's release in one transaction: a finished job is nobody's."""
    repo.set_state(s, job=job, state=state, error=error)
    leases.release_in(s, job.id)


def finish_job(db: Database, leases: Leases, job_id: str, state: str, error: str | None = None) -> None:
    """Moves an unfinished job to a final ``state`` (fenced: raises LeaseLost when not ours)."""

    def finish(s: Session) -> None:
        leases.fence(s, job_id)
        job = repo.get_job(s, job_id)
        if not JobState(job.state).is_finished():
            end_job(s, leases, job, state, error)

    db.write_retrying(finish)


@dataclass
class JobRun:
    """Runs job ``job_id`` to its end, or until ``stopping()`` (left resumable), a cancel
    (``cancelled()``) or the loss of its lease."""

    db: Database
    settings: Settings
    launcher: Launcher
    leases: Leases
    job_id: str
    stopping: Callable[[], bool]
    cancelled: Callable[[], bool]

    def __call__(self) -> None:
        job_id = self.job_id
        with self.db.session_scope() as s:
            self.leases.fence(s, job_id)
            job = repo.get_job(s, job_id)
            if JobState(job.state).is_finished():
                return
            if job.cancel_requested:
                end_job(s, self.leases, job, "cancelled")
                return
            spec = JobSpec.model_validate(job.spec)
            resume_state, phase = job.agent_state, job.state
            if job.state == "queued":
                repo.set_state(s, job=job, state="running")
            facts = JobFacts.of(job)
            stored = {t.trial_id: outcome_of(t) for t in repo.all_trials(s, job_id=job_id)}

        launched = self.launcher(spec)
        try:
            with self.db.session_scope() as s:
                self.leases.fence(s, job_id)
                job = repo.get_job(s, job_id)
                job.space = launched.space.to_dict()
                job.dense = launched.dense_metrics.to_dict()
            budget = Budget(**spec.budget.model_dump(exclude_none=True))
            recorder = Recorder(self.db, facts, launched.space, budget, self.leases.owner,
                                fence=lambda s: self.leases.fence(s, job_id))
            if phase != "finalizing":
                self._search(spec, launched, budget, recorder, resume_state, stored)
                self.leases.check(job_id)
                if self.stopping():
                    return  # left running: the next controller resumes it
                if self.cancelled():
                    finish_job(self.db, self.leases, job_id, "cancelled")
                    return
            self._finalize(spec, launched, recorder)
        finally:
            launched.pool.close()

    def _should_stop(self) -> bool:
        return self.stopping() or self.cancelled() or self.leases.is_lost(self.job_id)

    def _search(self, spec: JobSpec, launched: Launched, budget: Budget, recorder: Recorder,
                resume_state: dict[str, Any] | None, stored: dict[int, Outcome]) -> None:
        from agents.registry import make_agent
        from workers.hints import agent_hints
        from workers.loop import run_search

        hints = agent_hints(spec.agent.kind, budget, spec.agent.options, launched.pool)
        agent = make_agent(
            spec.agent.kind, launched.space, budget, seed=spec.seed, options=spec.agent.options, hints=hints
        )
        trials = spec.agent.trials
        if resume_state is not None:
            agent.load_state_dict(resume_state)
            pending = {int(p["trial_id"]) for p in resume_state.get("pending", [])}
            # proposals already told are done; pending ones are re-asked (and answered from storage)
            trials -= len([t for t in stored if t not in pending])
        run_search(
            agent,
            launched.pool,
            trials=max(trials, 0),
            batch_size=max(1, spec.workers),
            stored=stored,
            on_outcome=recorder.on_outcome,
            on_state=recorder.on_state,
            should_stop=self._should_stop,
        )

    def _finalize(self, spec: JobSpec, launched: Launched, recorder: Recorder) -> None:
        job_id = self.job_id
        with self.db.session_scope() as s:
            self.leases.fence(s, job_id)
            job = repo.get_job(s, job_id)
            if job.state != "finalizing":
                repo.set_state(s, job=job, state="finalizing")
            # the agent's baselines are its first proposals (Agent.baselines)
            firsts = repo.first_trials(s, job_id=job_id, n=len(BASELINE_ROLES)) if spec.finalize.baseline else []
            # a latency budget is a promise finalize checks on the delivered file: with nothing
            # feasible, the closest point is finalized and its miss reported (budget_met: false)
            latency_budget = spec.budget.latency_ratio is not None or spec.budget.latency_ms is not None
            candidates = finalize_candidates(repo.front_trials(s, job_id=job_id), firsts,
                                             top_k=spec.finalize.top_k, baseline=spec.finalize.baseline,
                                             closest=latency_budget)
        out_dir = Path(self.settings.artifacts_dir or ".") / job_id

        def on_progress(report: Any) -> None:
            self.leases.check(job_id)  # a controller that lost the lease stops at finalize's next step
            recorder.on_finalize(report)

        artifacts = launched.finalize(candidates, out_dir, on_progress) if candidates else []
        with self.db.session_scope() as s:
            self.leases.fence(s, job_id)
            repo.replace_artifacts(s, job_id=job_id, items=[artifact_fields(a) for a in artifacts])
            job = repo.get_job(s, job_id)
            end_job(s, self.leases, job, "cancelled" if self.cancelled() else "succeeded")
