"""The job runner: a queue, at most ``max_concurrent_jobs`` job threads, restart-resume.

Each job runs in its own thread (:class:`service.jobs.run.JobRun`: launch, search, finalize;
the search blocks). On start-up, jobs left queued/running/finalizing are resumed, so nothing
finished is evaluated or stored twice.

Replicas share the work through job leases (:mod:`service.jobs.leases`): a controller runs a
job only while it holds the job's lease, renews it from a heartbeat thread, and fences every
write with a renewal in the same transaction. Every controller polls for claimable jobs (queued,
or leased by a controller that stopped renewing), so a job submitted to a busy replica runs on a
free one, and a dead replica's jobs resume elsewhere exactly as after a restart.

The runner gets a *launcher* (spec → space, dense metrics, pool, finalize): the real one builds
workers; tests inject a small in-process one.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import traceback

from service.config import Settings
from service.db import Database, repo
from service.errors import ConflictError, LeaseLost, StorageError
from service.jobs.leases import Leases, new_controller_id
from service.jobs.run import JobRun, end_job, finish_job
from service.launcher import Launched, Launcher
from service.states import JobState
from workers.spec import JobSpec

__all__ = ["Runner", "cost_key_for", "default_launcher", "new_controller_id"]

log = logging.getLogger("autoprune.runner")


def cost_key_for(spec: JobSpec) -> str:
    """The front's cost axis: latency when the budget or NSGA-II uses it, else MACs."""
    budget = spec.budget
    if budget.latency_ms is not None or budget.latency_ratio is not None or spec.agent.kind == "optuna-nsga2":
        return "latency_ms"
    return "macs"


class Runner:
    """Runs jobs from the database, at most ``settings.max_concurrent_jobs`` at a time."""

    def __init__(self, db: Database, settings: Settings, launcher: Launcher | None = None) -> None:
        self.db = db
        self.settings = settings
        self.launcher = launcher or default_launcher(settings)
        self.controller_id = new_controller_id()
        self.leases = Leases(db, owner=self.controller_id, seconds=settings.lease_seconds)
        self._wake: queue.Queue[None] = queue.Queue()  # a job was submitted or a slot freed
        self._slots = threading.Semaphore(settings.max_concurrent_jobs)
        self._stopping = threading.Event()
        self._beat_stop = threading.Event()
        self._cancel: set[str] = set()
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
            self.leases.release(job_id)
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
            if job_id not in self._active and self.leases.take(s, job_id):
                end_job(s, self.leases, job, "cancelled")

    def is_idle(self) -> bool:
        with self._lock:
            return not self._active

    # --- dispatch and heartbeat -----------------------------------------------------------------
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
                    job_id = self.leases.claim(exclude=list(self._active)) if not self._stopping.is_set() else None
                    if job_id is None:
                        return
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

    def _beat(self) -> None:
        while not self._beat_stop.wait(self.settings.heartbeat_seconds):
            self._renew_leases()

    def _renew_leases(self) -> None:
        """Renews the leases of running jobs; marks lost ones, picks up cancels made elsewhere."""
        with self._lock:
            ids = list(self._active)
        if not ids:
            return
        try:
            lost, cancelled = self.leases.renew(ids)
        except StorageError as exc:  # the lease lasts a while yet; the job's own writes retry
            log.warning("cannot renew leases: %s", exc)
            return
        with self._lock:
            self._cancel.update(cancelled)
            lost = [j for j in lost if j in self._active]
        for j in lost:
            log.warning("job %s: lease taken over by another controller; stopping it here", j)

    # --- one job's thread -----------------------------------------------------------------------
    def _cancelled(self, job_id: str) -> bool:
        return job_id in self._cancel  # a set lookup: no lock (cancel() holds it across a transaction)

    def _run_guarded(self, job_id: str) -> None:
        run = JobRun(self.db, self.settings, self.launcher, self.leases, job_id,
                     stopping=self._stopping.is_set, cancelled=lambda: self._cancelled(job_id))
        try:
            run()
        except LeaseLost as exc:
            log.warning("%s; stopped here without writing", exc)
        except Exception as exc:  # noqa: BLE001 - a job's failure must not kill the runner
            if self.leases.is_lost(job_id):
                log.warning("job %s stopped here (lease lost): %s", job_id, exc)
            else:
                log.exception("job %s failed", job_id)
                try:
                    finish_job(self.db, self.leases, job_id, "failed", f"{type(exc).__name__}: {exc}")
                except LeaseLost as lost:
                    log.warning("%s; its failure is not recorded here", lost)
                log.debug(traceback.format_exc())
        finally:
            self.leases.release(job_id)
            with self._lock:
                self._active.pop(job_id, None)
            self._slots.release()
            self._wake.put(None)


def default_launcher(settings: Settings) -> Launcher:
    """The real launcher: workers' task, pool (in-process or Ray) and finalize."""

    def launch(spec: JobSpec) -> Launched:
        from service.launch import launch_with_workers

        return launch_with_workers(spec, settings)

    return launch
