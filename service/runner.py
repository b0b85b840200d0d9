"""The job runner: a queue, at most ``max_concurrent_jobs`` job threads, restart-resume.

Each job runs ``workers.loop.run_search`` in its own thread (it blocks). Every finished trial is
committed together with its events and the updated front; the agent's state is saved through
``on_state``. On start-up, jobs left queued/running/finalizing are resumed: the agent is rebuilt,
its saved state loaded, and the stored outcomes passed by trial id, so nothing finished is
evaluated or stored twice.

Replicas share the work through job leases (``repo.claim_next_job``): a controller runs a job
only while it holds the job's lease, renews it from a heartbeat thread, and fences every write
with a renewal in the same transaction, so a controller that lost the lease writes nothing more.
Every controller polls for claimable jobs (queued, or leased by a controller that stopped
renewing), so a job submitted to a busy replica runs on a free one, and a dead replica's jobs
resume elsewhere exactly as after a restart.

The runner gets a *launcher* (spec → space, dense metrics, pool, finalize): the real one builds
workers; tests inject a small in-process one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.types import Budget, Metrics, Outcome, Proposal
from search_spaces.space import PolicyError, SearchSpace
from service.api.schemas import Progress, Trial
from service.config import Settings
from service.db import Database, repo
from service.db.models import JobRow, TrialRow
from service.errors import ConflictError, LeaseLost, StorageError
from service.front import add_to_front
from service.launcher import Launched, Launcher
from service.states import JobState
from workers.spec import JobSpec

log = logging.getLogger("autoprune.runner")


def cost_key_for(spec: JobSpec) -> str:
    """The front's cost axis: latency when the budget or NSGA-II uses it, else MACs."""
    budget = spec.budget
    if budget.latency_ms is not None or budget.latency_ratio is not None or spec.agent.kind == "optuna-nsga2":
        return "latency_ms"
    return "macs"


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


def new_controller_id() -> str:
    """Names this controller in leases and trials: host, pid, and a random part (pids repeat)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Runner:
    """Runs jobs from the database, at most ``settings.max_concurrent_jobs`` at a time."""

    def __init__(self, db: Database, settings: Settings, launcher: Launcher | None = None) -> None:
        self.db = db
        self.settings = settings
        self.launcher = launcher or default_launcher(settings)
        self.controller_id = new_controller_id()
        self._wake: queue.Queue[None] = queue.Queue()  # a job was submitted or a slot freed
        self._slots = threading.Semaphore(settings.max_concurrent_jobs)
        self._stopping = threading.Event()
        self._beat_stop = threading.Event()
        self._cancel: set[str] = set()
        self._lost: set[str] = set()  # jobs whose lease another controller took over
        self._active: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._dispatcher: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Starts claiming jobs: those submitted anywhere, and those a previous (or a dead)
        controller left unfinished once their lease is free or stale."""
        self._dispatcher = threading.Thread(target=self._dispatch, name="autoprune-dispatch", daemon=True)
        self._heartbeat = threading.Thread(target=self._beat, name="autoprune-lease", daemon=True)
        self._dispatcher.start()
        self._heartbeat.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops taking jobs and asks running ones to stop; they stay resumable (not cancelled)
        and their leases are released, so another controller may resume them at once."""
        self._stopping.set()
        self._wake.put(None)
        if self._dispatcher is not None:
            self._dispatcher.join(timeout)
        with self._lock:
            threads = dict(self._active)
        for t in threads.values():  # the heartbeat keeps their leases while they wind down
            t.join(timeout)
        for job_id in threads:  # a thread that did not stop in time: its writes now fail the fence
            self._release(job_id)
        self._beat_stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout)

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
        self._wake.put(None)
        return job_id

    def cancel(self, job_id: str) -> None:
        """Cancels a job nobody runs at once; a running one (here or on another controller, which
        sees the request at its next heartbeat) stops at its next batch boundary."""
        with self._lock, self.db.session_scope() as s:
            job = repo.get_job(s, job_id, for_update=True)
            if JobState(job.state).is_finished():
                raise ConflictError(f"job {job_id!r} is already {job.state}")
            job.cancel_requested = True
            self._cancel.add(job_id)
            # Nobody runs it when this controller can take its lease and is not running it itself.
            if job_id not in self._active and repo.take_lease(
                s, job_id=job_id, owner=self.controller_id, seconds=self.settings.lease_seconds
            ):
                repo.set_state(s, job=job, state="cancelled")
                repo.release_lease(s, job_id=job_id, owner=self.controller_id)

    def is_idle(self) -> bool:
        with self._lock:
            return not self._active

    # --- dispatch and leases --------------------------------------------------------------------
    def _dispatch(self) -> None:
        """Claims jobs while slots are free; wakes on submit, on a finished job, or every poll."""
        while not self._stopping.is_set():
            self._claim_free_slots()
            with contextlib.suppress(queue.Empty):
                self._wake.get(timeout=self.settings.job_poll_seconds)

    def _claim_free_slots(self) -> None:
        while not self._stopping.is_set() and self._slots.acquire(blocking=False):
            started = False
            try:
                with self._lock:
                    job_id = self._claim() if not self._stopping.is_set() else None
                    if job_id is None:
                        return
                    self._lost.discard(job_id)
                    t = threading.Thread(target=self._run_guarded, args=(job_id,), name=f"job-{job_id[:8]}",
                                         daemon=True)
                    self._active[job_id] = t
                t.start()
                started = True
            except StorageError as exc:  # the database is away: try again at the next poll
                log.warning("cannot claim jobs: %s", exc)
                return
            finally:
                if not started:
                    self._slots.release()

    def _claim(self) -> str | None:
        with self.db.session_scope() as s:
            job_id = repo.claim_next_job(
                s, owner=self.controller_id, seconds=self.settings.lease_seconds, exclude=list(self._active)
            )
        if job_id is not None:
            log.info("controller %s claimed job %s", self.controller_id, job_id)
        return job_id

    def _beat(self) -> None:
        while not self._beat_stop.wait(self.settings.heartbeat_seconds):
            self._renew_leases()

    def _renew_leases(self) -> None:
        """Renews the leases of running jobs; marks lost ones, picks up cancels made elsewhere."""
        with self._lock:
            ids = sorted(self._active)  # one lock order for every controller: no deadlocks between beats
        if not ids:
            return
        try:
            with self.db.session_scope() as s:
                held = [j for j in ids if repo.renew_lease(
                    s, job_id=j, owner=self.controller_id, seconds=self.settings.lease_seconds)]
                cancelled = repo.cancel_requested_among(s, job_ids=held)
        except StorageError as exc:  # the lease lasts a while yet; the job's own writes retry
            log.warning("cannot renew leases: %s", exc)
            return
        with self._lock:
            lost = [j for j in ids if j not in held and j in self._active]
            self._lost.update(lost)
            self._cancel.update(cancelled)
        for j in lost:
            log.warning("job %s: lease taken over by another controller; stopping it here", j)

    def _fence(self, s: Any, job_id: str) -> None:
        """First statement of every job write: renews the lease, or raises LeaseLost (rolled back)."""
        if not repo.renew_lease(s, job_id=job_id, owner=self.controller_id, seconds=self.settings.lease_seconds):
            self._lost.add(job_id)
            raise LeaseLost(f"job {job_id}: another controller holds its lease")

    def _release(self, job_id: str) -> None:
        try:
            with self.db.session_scope() as s:
                repo.release_lease(s, job_id=job_id, owner=self.controller_id)
        except StorageError as exc:  # it expires on its own
            log.warning("job %s: cannot release its lease: %s", job_id, exc)

    def _run_guarded(self, job_id: str) -> None:
        try:
            self._run(job_id)
        except LeaseLost as exc:
            log.warning("%s; stopped here without writing", exc)
        except Exception as exc:  # noqa: BLE001 - a job's failure must not kill the runner
            if job_id in self._lost:
                log.warning("job %s stopped here (lease lost): %s", job_id, exc)
            else:
                log.exception("job %s failed", job_id)
                try:
                    self._finish(job_id, "failed", f"{type(exc).__name__}: {exc}")
                except LeaseLost as lost:
                    log.warning("%s; its failure is not recorded here", lost)
                log.debug(traceback.format_exc())
        finally:
            self._release(job_id)
            with self._lock:
                self._active.pop(job_id, None)
            self._slots.release()
            self._wake.put(None)

    def _finish(self, job_id: str, state: str, error: str | None = None) -> None:
        def finish(s: Any) -> None:
            self._fence(s, job_id)
            job = repo.get_job(s, job_id)
            if not JobState(job.state).is_finished():
                self._end(s, job, state, error)

        self.db.write_retrying(finish)

    def _end(self, s: Any, job: JobRow, state: str, error: str | None = None) -> None:
        """The final state and the lease's release in one transaction: a finished job is nobody's."""
        repo.set_state(s, job=job, state=state, error=error)
        repo.release_lease(s, job_id=job.id, owner=self.controller_id)

    def _should_stop(self, job_id: str) -> bool:
        return self._stopping.is_set() or job_id in self._cancel or job_id in self._lost

    def _finalize_progress(self, job_id: str) -> Callable[[Any], None]:
        """Finalize's ``on_progress``: each report becomes a ``finalize`` event (the dashboard's
        progress line shows it); a controller that lost the lease stops at finalize's next step."""

        def on_progress(report: Any) -> None:
            self._check_lease(job_id)
            data = {k: report[k] for k in FINALIZE_PROGRESS_FIELDS if isinstance(report, dict) and k in report}

            def write(s: Any) -> None:
                self._fence(s, job_id)
                repo.add_event(s, job_id=job_id, type="finalize", data=data)

            try:
                self.db.write_retrying(write)
            except StorageError:  # progress is for show: a database away must not fail finalize
                log.warning("job %s: finalize progress not recorded", job_id, exc_info=True)

        return on_progress

    def _check_lease(self, job_id: str) -> None:
        if job_id in self._lost:
            raise LeaseLost(f"job {job_id}: another controller took over its lease")

    # --- one job --------------------------------------------------------------------------------
    def _run(self, job_id: str) -> None:
        with self.db.session_scope() as s:
            self._fence(s, job_id)
            job = repo.get_job(s, job_id)
            if JobState(job.state).is_finished():
                return
            if job.cancel_requested:
                self._end(s, job, "cancelled")
                return
            spec = JobSpec.model_validate(job.spec)
            resume_state, phase = job.agent_state, job.state
            if job.state == "queued":
                repo.set_state(s, job=job, state="running")
            stored = {t.trial_id: _outcome(t) for t in repo.all_trials(s, job_id=job_id)}

        launched = self.launcher(spec)
        try:
            with self.db.session_scope() as s:
                self._fence(s, job_id)
                job = repo.get_job(s, job_id)
                job.space = launched.space.to_dict()
                job.dense = launched.dense_metrics.to_dict()
            budget = Budget(**spec.budget.model_dump(exclude_none=True))
            if phase != "finalizing":
                self._search(job_id, spec, launched, budget, resume_state, stored)
                self._check_lease(job_id)
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
        recorder = _Recorder(self.db, job_id, launched.space, budget, self.controller_id,
                             fence=lambda s: self._fence(s, job_id))
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
            self._fence(s, job_id)
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
        on_progress = self._finalize_progress(job_id)
        artifacts = launched.finalize(candidates, out_dir, on_progress) if candidates else []
        with self.db.session_scope() as s:
            self._fence(s, job_id)
            repo.replace_artifacts(s, job_id=job_id, items=[_artifact_fields(a) for a in artifacts])
            job = repo.get_job(s, job_id)
            self._end(s, job, "cancelled" if job_id in self._cancel else "succeeded")


#: The fields of finalize's progress reports that the ``finalize`` event carries (not the policy
#: or the metrics, which the artifacts hold once they are written).
FINALIZE_PROGRESS_FIELDS = ("rank", "stage", "step", "steps", "prune_step", "prune_steps")


def _outcome(t: TrialRow) -> Outcome:
    metrics = Metrics.from_dict(t.metrics) if t.metrics else None
    return Outcome(t.trial_id, dict(t.policy), metrics, t.error)


class _Recorder:
    """The ``on_outcome`` / ``on_state`` callbacks of one job: commit, update the front, emit events."""

    def __init__(self, db: Database, job_id: str, space: SearchSpace, budget: Budget, controller: str,
                 fence: Callable[[Any], None]) -> None:
        self.db, self.job_id, self.space, self.budget = db, job_id, space, budget
        # fence(session) runs first in every write: raises LeaseLost once another controller runs the job
        self.controller, self.fence = controller, fence

    def on_state(self, state: dict[str, Any]) -> None:
        def save(s: Any) -> None:
            self.fence(s)
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
            "controller": self.controller,
        }

        def record(s: Any) -> None:
            self.fence(s)
            if repo.trial_exists(s, job_id=self.job_id, trial_id=outcome.trial_id):
                return  # already committed (before a restart, or by a retried write): never twice
            row = repo.add_trial(s, job_id=self.job_id, trial_id=outcome.trial_id, **fields)
            repo.add_event(s, job_id=self.job_id, type="trial", data=Trial.from_row(row).model_dump(mode="json"))
            job = repo.get_job(s, self.job_id)
            # the new trial against the current front only: the cost of a commit stays flat
            front = add_to_front(s, job_id=job.id, cost_key=job.cost_key, row=row)
            if front is not None:
                repo.add_event(s, job_id=job.id, type="front", data={"trial_ids": front})
            # the trial just stored is the latest to finish: only the count is read (an index count)
            seen = repo.TrialSummary(count=repo.count_trials(s, job_id=job.id), last_finished_at=row.finished_at)
            progress = Progress.of(job, seen).model_dump(mode="json")
            repo.add_event(s, job_id=self.job_id, type="progress", data=progress)

        self.db.write_retrying(record)


def default_launcher(settings: Settings) -> Launcher:
    """The real launcher: workers' task, pool (in-process or Ray) and finalize."""

    def launch(spec: JobSpec) -> Launched:
        from service.launch import launch_with_workers

        return launch_with_workers(spec, settings)

    return launch
