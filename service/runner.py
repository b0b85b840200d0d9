"""The job runner: a queue, at most ``max_concurrent_jobs`` job threads, restart-resume.

Each job runs ``workers.loop.run_search`` in its own thread (it blocks). Every finished trial is
committed together with its events and the recomputed front; the agent's state is saved through
``on_state``. On start-up, jobs left queued/running/finalizing are resumed: the agent is rebuilt,
its saved state loaded, and the stored outcomes passed by trial id, so nothing finished is
evaluated or stored twice.

The runner gets a *launcher* (spec → space, dense metrics, pool, finalize): the real one builds
workers; tests inject a small in-process one.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from agents.pareto import Point, pareto_front
from agents.types import Budget, Metrics, Outcome, Proposal
from search_spaces.space import PolicyError, SearchSpace
from service.config import Settings
from service.db import Database, repo
from service.db.models import JobRow, TrialRow
from service.errors import ConflictError
from service.views import progress_view, trial_view
from workers.spec import JobSpec

log = logging.getLogger("autoprune.runner")


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINALIZING = "finalizing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class EvalPool(Protocol):
    @property
    def space(self) -> SearchSpace: ...

    def evaluate(self, proposals: list[Proposal]) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


#: finalize(candidates, out_dir, on_progress) -> artifacts, each with rank, dir, files, metrics.
FinalizeFn = Callable[[list[Outcome], Path, Callable[[str], None] | None], Sequence[Any]]


@dataclass
class Launched:
    """What a launcher builds for one job."""

    space: SearchSpace
    dense_metrics: Metrics
    pool: EvalPool
    finalize: FinalizeFn


Launcher = Callable[[JobSpec], Launched]


def cost_key_for(spec: JobSpec) -> str:
    """The front's cost axis: latency when the budget or NSGA-II uses it, else MACs."""
    budget = spec.budget
    if budget.latency_ms is not None or budget.latency_ratio is not None or spec.agent.kind == "optuna-nsga2":
        return "latency_ms"
    return "macs"


def _cost(metrics: dict[str, Any], key: str) -> float:
    v = metrics.get(key)
    return float(v) if v is not None else math.inf


def _artifact_fields(a: Any) -> dict[str, Any]:
    """Accepts workers' ArtifactInfo (attributes) or a mapping."""
    get: Callable[[str], Any] = a.get if isinstance(a, dict) else (lambda k: getattr(a, k))
    files = [
        dict(f) if isinstance(f, dict) else {"name": str(f[0]), "size": int(f[1]), "sha256": str(f[2])}
        for f in get("files")
    ]
    metrics = get("metrics")
    metrics = metrics.to_dict() if hasattr(metrics, "to_dict") else dict(metrics or {})
    return {
        "rank": int(get("rank")),
        "trial_id": int(get("trial_id")),
        "dir": str(get("dir")),
        "files": files,
        "metrics": metrics,
    }


class Runner:
    """Runs jobs from the database, at most ``settings.max_concurrent_jobs`` at a time."""

    def __init__(self, db: Database, settings: Settings, launcher: Launcher | None = None) -> None:
        self.db = db
        self.settings = settings
        self.launcher = launcher or default_launcher(settings)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._slots = threading.Semaphore(settings.max_concurrent_jobs)
        self._stopping = threading.Event()
        self._cancel: set[str] = set()
        self._active: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._dispatcher: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Starts dispatching, queueing first the jobs a previous controller left unfinished."""
        with self.db.session_scope() as s:
            leftover = [j.id for j in repo.jobs_in_states(s, states=["running", "finalizing", "queued"])]
        for job_id in leftover:
            self._queue.put(job_id)
        self._dispatcher = threading.Thread(target=self._dispatch, name="autoprune-dispatch", daemon=True)
        self._dispatcher.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops taking jobs and asks running ones to stop; they stay resumable (not cancelled)."""
        self._stopping.set()
        self._queue.put(None)
        if self._dispatcher is not None:
            self._dispatcher.join(timeout)
        with self._lock:
            threads = list(self._active.values())
        for t in threads:
            t.join(timeout)

    def submit(self, spec: JobSpec) -> str:
        with self.db.session_scope() as s:
            job = repo.create_job(
                s,
                spec=spec.model_dump(mode="json"),
                name=spec.name,
                cost_key=cost_key_for(spec),
                trials_total=spec.agent.trials,
            )
            repo.set_state(s, job=job, state="queued")
            job_id = job.id
        self._queue.put(job_id)
        return job_id

    def cancel(self, job_id: str) -> None:
        """Cancels a queued job at once; a running one stops at its next batch boundary."""
        with self._lock, self.db.session_scope() as s:
            job = repo.get_job(s, job_id, for_update=True)
            if JobState(job.state).is_finished():
                raise ConflictError(f"job {job_id!r} is already {job.state}")
            job.cancel_requested = True
            if job.state == "queued" and job_id not in self._active:
                repo.set_state(s, job=job, state="cancelled")
            self._cancel.add(job_id)

    def is_idle(self) -> bool:
        with self._lock:
            return not self._active and self._queue.empty()

    # --- dispatch -------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            job_id = self._queue.get()
            if job_id is None or self._stopping.is_set():
                return
            self._slots.acquire()
            with self._lock:
                if self._stopping.is_set() or job_id in self._active:
                    self._slots.release()
                    continue
                t = threading.Thread(target=self._run_guarded, args=(job_id,), name=f"job-{job_id[:8]}", daemon=True)
                self._active[job_id] = t
            t.start()

    def _run_guarded(self, job_id: str) -> None:
        try:
            self._run(job_id)
        except Exception as exc:  # noqa: BLE001 - a job's failure must not kill the runner
            log.exception("job %s failed", job_id)
            self._finish(job_id, "failed", f"{type(exc).__name__}: {exc}")
            log.debug(traceback.format_exc())
        finally:
            with self._lock:
                self._active.pop(job_id, None)
            self._slots.release()

    def _finish(self, job_id: str, state: str, error: str | None = None) -> None:
        def finish(s: Any) -> None:
            job = repo.get_job(s, job_id)
            if not JobState(job.state).is_finished():
                repo.set_state(s, job=job, state=state, error=error)

        self.db.write_retrying(finish)

    def _should_stop(self, job_id: str) -> bool:
        return self._stopping.is_set() or job_id in self._cancel

    # --- one job --------------------------------------------------------------------------------
    def _run(self, job_id: str) -> None:
        with self.db.session_scope() as s:
            job = repo.get_job(s, job_id)
            if JobState(job.state).is_finished():
                return
            if job.cancel_requested:
                repo.set_state(s, job=job, state="cancelled")
                return
            spec = JobSpec.model_validate(job.spec)
            resume_state, phase = job.agent_state, job.state
            if job.state == "queued":
                repo.set_state(s, job=job, state="running")
            stored = {t.trial_id: _outcome(t) for t in repo.all_trials(s, job_id=job_id)}

        launched = self.launcher(spec)
        try:
            with self.db.session_scope() as s:
                job = repo.get_job(s, job_id)
                job.space = launched.space.to_dict()
                job.dense = launched.dense_metrics.to_dict()
            budget = Budget(**spec.budget.model_dump(exclude_none=True))
            if phase != "finalizing":
                self._search(job_id, spec, launched, budget, resume_state, stored)
                if self._stopping.is_set():
                    return  # left running: the next controller resumes it
                if job_id in self._cancel:
                    self._finish(job_id, "cancelled")
                    return
            self._finalize(job_id, spec, launched)
        finally:
            close = getattr(launched.pool, "close", None)
            if close is not None:
                close()

    def _search(
        self,
        job_id: str,
        spec: JobSpec,
        launched: Launched,
        budget: Budget,
        resume_state: dict[str, Any] | None,
        stored: dict[int, Outcome],
    ) -> None:
        from agents.registry import make_agent
        from workers.loop import run_search

        agent = make_agent(spec.agent.kind, launched.space, budget, seed=spec.seed, options=spec.agent.options)
        trials = spec.agent.trials
        if resume_state is not None:
            agent.load_state_dict(resume_state)
            pending = {int(p["trial_id"]) for p in resume_state.get("pending", [])}
            # proposals already told are done; pending ones are re-asked (and answered from storage)
            trials -= len([t for t in stored if t not in pending])
        recorder = _Recorder(self.db, job_id, launched.space, budget)
        run_search(
            agent,
            launched.pool,
            trials=max(trials, 0),
            batch_size=max(1, spec.workers),
            stored=stored,
            on_outcome=recorder.on_outcome,
            on_state=recorder.on_state,
            should_stop=lambda: self._should_stop(job_id),
        )

    def _finalize(self, job_id: str, spec: JobSpec, launched: Launched) -> None:
        with self.db.session_scope() as s:
            job = repo.get_job(s, job_id)
            if job.state != "finalizing":
                repo.set_state(s, job=job, state="finalizing")
            front = [t for t in repo.front_trials(s, job_id=job_id) if t.feasible and t.metrics]
            front.sort(key=lambda t: (-(t.quality or 0.0), t.trial_id))
            chosen = front[: spec.finalize.top_k]
            base = repo.first_trial(s, job_id=job_id) if spec.finalize.baseline else None
            if (
                base is not None
                and (base.info or {}).get("role") == "baseline"
                and base.feasible
                and base.metrics
                and all(t.trial_id != base.trial_id for t in chosen)
            ):
                chosen.append(base)  # the last artifact: the same fine-tune as the best
            candidates = [_outcome(t) for t in chosen]
        out_dir = Path(self.settings.artifacts_dir or ".") / job_id
        artifacts = launched.finalize(candidates, out_dir, None) if candidates else []
        with self.db.session_scope() as s:
            repo.replace_artifacts(s, job_id=job_id, items=[_artifact_fields(a) for a in artifacts])
            job = repo.get_job(s, job_id)
            state = "cancelled" if job_id in self._cancel else "succeeded"
            repo.set_state(s, job=job, state=state)


def _outcome(t: TrialRow) -> Outcome:
    metrics = Metrics.from_dict(t.metrics) if t.metrics else None
    return Outcome(t.trial_id, dict(t.policy), metrics, t.error)


class _Recorder:
    """The ``on_outcome`` / ``on_state`` callbacks of one job: commit, recompute front, emit events."""

    def __init__(self, db: Database, job_id: str, space: SearchSpace, budget: Budget) -> None:
        self.db, self.job_id, self.space, self.budget = db, job_id, space, budget

    def on_state(self, state: dict[str, Any]) -> None:
        def save(s: Any) -> None:
            repo.get_job(s, self.job_id).agent_state = state

        self.db.write_retrying(save)

    def on_outcome(self, proposal: Proposal, outcome: Outcome, cached: bool) -> None:
        m = outcome.metrics
        try:
            kept: dict[str, int] = self.space.kept(self.space.validate(outcome.policy))
        except PolicyError:
            kept = {}
        violations = self.budget.violations(m) if m is not None else []
        fields = {
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
        }
        def record(s: Any) -> None:
            if repo.trial_exists(s, job_id=self.job_id, trial_id=outcome.trial_id):
                return  # already committed (before a restart, or by a retried write): never twice
            row = repo.add_trial(s, job_id=self.job_id, trial_id=outcome.trial_id, **fields)
            repo.add_event(s, job_id=self.job_id, type="trial", data=trial_view(row))
            job = repo.get_job(s, self.job_id)
            self._update_front(s, job)
            repo.add_event(s, job_id=self.job_id, type="progress", data=progress_view(s, job))

        self.db.write_retrying(record)

    def _update_front(self, s: Any, job: JobRow) -> None:
        rows = [t for t in repo.all_trials(s, job_id=job.id) if t.metrics is not None]
        points = [Point(float(t.quality or 0.0), _cost(t.metrics or {}, job.cost_key), float(t.violation or 0.0)) for t in rows]
        ids = sorted(rows[i].trial_id for i in pareto_front(points))
        if ids != sorted(t.trial_id for t in rows if t.on_front):
            repo.set_front(s, job_id=job.id, trial_ids=ids)
            repo.add_event(s, job_id=job.id, type="front", data={"trial_ids": ids})


def default_launcher(settings: Settings) -> Launcher:
    """The real launcher: workers' task, pool (in-process or Ray) and finalize."""

    def launch(spec: JobSpec) -> Launched:
        from service.launch import launch_with_workers

        return launch_with_workers(spec, settings)

    return launch
