"""The JSON answers of ``GET /jobs`` and ``GET /jobs/{id}``, kept cheap under many readers.

A finished job's view never changes again (its final state and the release of its lease are one
transaction), so its JSON is built once and kept (bounded, least recently used dropped): reading
it again touches neither the database nor pydantic. Unfinished jobs' views are built per read,
a page's trial summaries in one batch. A page reads ids and states first, so the stored
spec/space columns are decoded only for the views it builds. At most ``readers`` threads read
at once: with one GIL and one database file more give no parallelism, only more threads for the
event loop (which answers the cached views) to wait behind; the others sleep on a semaphore.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from sqlalchemy.orm import Session

from service.api.schemas import Job
from service.db import Database, repo
from service.db.models import JobRow
from service.states import FINAL_STATES


class JobViews:
    """JSON of job views; those of finished jobs cached as bytes."""

    def __init__(self, size: int = 2048, readers: int = 4) -> None:
        self.size = size
        self._finished: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._readers = threading.BoundedSemaphore(readers)

    def finished(self, job_id: str) -> bytes | None:
        """The cached view of a finished job, or None (unknown, unfinished, or dropped)."""
        with self._lock:
            body = self._finished.get(job_id)
            if body is not None:
                self._finished.move_to_end(job_id)
            return body

    def one(self, db: Database, job_id: str) -> bytes:
        """One job's view; raises NotFoundError for an unknown id."""
        body = self.finished(job_id)
        if body is not None:
            return body
        with self._readers, db.session_scope() as s:
            row = repo.get_job(s, job_id)
            return self._build(s, [row])[row.id]

    def page(self, db: Database, *, offset: int, limit: int) -> bytes:
        """A page of the jobs list, newest first, as ``Page[Job]`` JSON."""
        with self._readers, db.session_scope() as s:
            ids, count = repo.job_page(s, offset=offset, limit=limit)
            parts: dict[str, bytes] = {}
            for job_id, state in ids:
                body = self.finished(job_id) if state in FINAL_STATES else None
                if body is not None:
                    parts[job_id] = body
            missing = [job_id for job_id, _ in ids if job_id not in parts]
            parts.update(self._build(s, repo.jobs_by_ids(s, job_ids=missing).values()))
        items = b",".join(parts[job_id] for job_id, _ in ids if job_id in parts)
        return b'{"items":[%s],"count":%d,"offset":%d,"limit":%d}' % (items, count, offset, limit)

    def _build(self, s: Session, rows: Iterable[JobRow]) -> dict[str, bytes]:
        rows = list(rows)
        summaries = repo.trial_summaries(s, job_ids=[row.id for row in rows])  # one batch
        built = {}
        for row in rows:
            body = Job.from_row(row, summaries[row.id]).model_dump_json().encode()
            if row.state in FINAL_STATES:
                self._keep(row.id, body)
            built[row.id] = body
        return built

    def _keep(self, job_id: str, body: bytes) -> None:
        with self._lock:
            self._finished[job_id] = body
            self._finished.move_to_end(job_id)
            while len(self._finished) > self.size:
                self._finished.popitem(last=False)
