"""The JSON answers of ``GET /jobs`` and ``GET /jobs/{id}``, kept cheap under many readers.

Each job's view is built once per *version* (:class:`service.db.repo.JobVersion`: state, lease
owner, launched, last event) and kept as JSON bytes (bounded, least recently used dropped). A
finished job's view never changes again (its final state and the release of its lease are one
transaction): it is answered from memory without touching the database. An unfinished one costs
one indexed version read while it is unchanged; a page of the list reads the versions of its
jobs in one query and builds only the views that changed (their trial summaries in one batch).
Versions are read from the database, so other replicas' writes are seen too.

At most ``readers`` threads read at once: with one GIL and one database file more give no
parallelism, only more threads for the event loop (which answers the finished views) to wait
behind; the others sleep on a semaphore.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from sqlalchemy.orm import Session

from service.api.schemas import Job
from service.db import Database, repo
from service.db.models import JobRow
from service.db.repo import JobVersion
from service.states import FINAL_STATES

#: the version a finished job's view is kept under: valid whatever is read later
FINAL = None


class JobViews:
    """JSON of job views, cached per version."""

    def __init__(self, size: int = 2048, readers: int = 4) -> None:
        self.size = size
        self._views: OrderedDict[str, tuple[JobVersion | None, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._readers = threading.BoundedSemaphore(readers)

    def finished(self, job_id: str) -> bytes | None:
        """The kept view of a finished job, or None (unknown, unfinished, or dropped)."""
        return self._get(job_id, FINAL)

    def one(self, db: Database, job_id: str) -> bytes:
        """One job's view; raises NotFoundError for an unknown id."""
        body = self.finished(job_id)
        if body is not None:
            return body
        with self._readers, db.session_scope() as s:
            version = repo.job_version(s, job_id)
            body = self._get(job_id, version)
            return body if body is not None else self._build(s, [version])[job_id]

    def page(self, db: Database, *, offset: int, limit: int) -> bytes:
        """A page of the jobs list, newest first, as ``Page[Job]`` JSON."""
        with self._readers, db.session_scope() as s:
            versions, count = repo.job_page(s, offset=offset, limit=limit)
            parts: dict[str, bytes] = {}
            for v in versions:
                body = self._get(v.id, v)
                if body is not None:
                    parts[v.id] = body
            parts.update(self._build(s, [v for v in versions if v.id not in parts]))
        items = b",".join(parts[v.id] for v in versions if v.id in parts)
        return b'{"items":[%s],"count":%d,"offset":%d,"limit":%d}' % (items, count, offset, limit)

    def _get(self, job_id: str, version: JobVersion | None) -> bytes | None:
        with self._lock:
            entry = self._views.get(job_id)
            if entry is None or (entry[0] is not FINAL and entry[0] != version):
                return None
            self._views.move_to_end(job_id)
            return entry[1]

    def _build(self, s: Session, versions: Iterable[JobVersion]) -> dict[str, bytes]:
        wanted = {v.id: v for v in versions}
        rows = repo.jobs_by_ids(s, job_ids=list(wanted))
        summaries = repo.trial_summaries(s, job_ids=list(rows))  # one batch
        built = {}
        for job_id, row in rows.items():
            body = Job.from_row(row, summaries[job_id]).model_dump_json().encode()
            built[job_id] = body
            self._keep(row, wanted[job_id], body)
        return built

    def _keep(self, row: JobRow, version: JobVersion, body: bytes) -> None:
        if row.state in FINAL_STATES:
            key: JobVersion | None = FINAL
        elif (row.state, row.lease_owner, row.space is not None) == (version.state, version.owner, version.launched):
            # The row was read after the version: its trials are at least as new as the version's
            # last event (a newer one makes the version miss later: sequences only grow), and
            # the rest is checked here, so the view is never kept under a version it is not.
            key = version
        else:
            return
        with self._lock:
            self._views[row.id] = (key, body)
            self._views.move_to_end(row.id)
            while len(self._views) > self.size:
                self._views.popitem(last=False)
