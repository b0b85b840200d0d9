"""In-process wake-ups per job: a commit that added a job's events wakes its event streams.

``Database.session_scope`` calls :meth:`JobEvents.notify` after a commit that appended events
(``repo.add_event`` marks the session), so the SSE route waits on this instead of polling the
database. Readers still read the events from the database (Last-Event-ID resume, and writes of
other processes, which no wake-up reaches: those are found by the streams' slow fallback poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: ``Session.info`` key: the jobs whose events a transaction appended (set by ``repo.add_event``)
EVENT_JOBS = "autoprune.event_jobs"


class _Waiter:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the stream's loop is gone; so is its subscription
            self.loop.call_soon_threadsafe(self.event.set)


class JobEvents:
    """Subscriptions of async readers to one job's new events; ``notify`` from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[_Waiter]] = {}

    def notify(self, job_id: str) -> None:
        with self._lock:
            waiters = list(self._waiters.get(job_id, ()))
        for w in waiters:
            w.wake()

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set after each commit of ``job_id``'s events (clear it before reading)."""
        waiter = _Waiter()
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(waiter)
        try:
            yield waiter.event
        finally:
            with self._lock:
                group = self._waiters.get(job_id)
                if group is not None:
                    group.discard(waiter)
                    if not group:
                        del self._waiters[job_id]

    def subscribers(self, job_id: str) -> int:
        with self._lock:
            return len(self._waiters.get(job_id, ()))
