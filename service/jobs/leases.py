"""This controller's job leases: claim, renew (the heartbeat), fence every write, release.

A controller runs a job only while it holds the job's lease, renews it from a heartbeat, and
fences every write with a renewal in the same transaction, so a controller that lost the lease
writes nothing more (:class:`service.errors.LeaseLost`). Every lease change is one conditional
UPDATE (:mod:`service.db.repo`), so two controllers never both hold one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Collection, Sequence

from sqlalchemy.orm import Session

from service.db import Database, repo
from service.errors import LeaseLost, StorageError

log = logging.getLogger("autoprune.runner")


def new_controller_id() -> str:
    """Names this controller in leases and trials: host, pid, and a random part (pids repeat)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leases:
    """The leases ``owner`` holds on ``db``; remembers the jobs whose lease it lost."""

    def __init__(self, db: Database, *, owner: str, seconds: float) -> None:
        self.db, self.owner, self.seconds = db, owner, seconds
        self._lost: set[str] = set()  # jobs whose lease another controller took over
        self._lock = threading.Lock()

    def claim(self, *, exclude: Collection[str] = ()) -> str | None:
        """Claims the oldest claimable job (queued, or its lease free or stale); None when none."""
        with self.db.session_scope() as s:
            job_id = repo.claim_next_job(s, owner=self.owner, seconds=self.seconds, exclude=list(exclude))
        if job_id is not None:
            with self._lock:
                self._lost.discard(job_id)
            log.info("controller %s claimed job %s", self.owner, job_id)
        return job_id

    def take(self, s: Session, job_id: str) -> bool:
        """Takes ``job_id``'s lease inside ``s`` when it is free, stale or already ours."""
        return repo.take_lease(s, job_id=job_id, owner=self.owner, seconds=self.seconds)

    def renew(self, job_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """The heartbeat: renews each lease in one transaction (ids sorted: one lock order for
        every controller); returns the jobs lost (marked) and those whose cancel was requested
        (anywhere). Raises StorageError when the database is away."""
        ids = sorted(job_ids)
        with self.db.session_scope() as s:
            held = [j for j in ids if repo.renew_lease(s, job_id=j, owner=self.owner, seconds=self.seconds)]
            cancelled = repo.cancel_requested_among(s, job_ids=held)
        lost = [j for j in ids if j not in held]
        with self._lock:
            self._lost.update(lost)
        return lost, cancelled

    def fence(self, s: Session, job_id: str) -> None:
        """First statement of every job write: renews the lease, or raises LeaseLost (rolled back)."""
        if not repo.renew_lease(s, job_id=job_id, owner=self.owner, seconds=self.seconds):
            with self._lock:
                self._lost.add(job_id)
            raise LeaseLost(f"job {job_id}: another controller holds its lease")

    def is_lost(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._lost

    def check(self, job_id: str) -> None:
        """Raises LeaseLost once the heartbeat or a fence found ``job_id``'s lease taken."""
        if self.is_lost(job_id):
            raise LeaseLost(f"job {job_id}: another controller took over its lease")

    def release_in(self, s: Session, job_id: str) -> bool:
        """Frees the lease inside ``s`` (with a final state: a finished job is nobody's)."""
        return repo.release_lease(s, job_id=job_id, owner=self.owner)

    def release(self, job_id: str) -> None:
        """Frees the lease in its own transaction; a database away leaves it to expire."""
        try:
            with self.db.session_scope() as s:
                self.release_in(s, job_id)
        except StorageError as exc:
            log.warning("job %s: cannot release its lease: %s", job_id, exc)
