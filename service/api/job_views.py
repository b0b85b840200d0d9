"""The JSON answers of ``GET /jobs`` and ``GET /jobs/{id}``, kept cheap under many readers.

Each job's view is built once per *version* (:class:`service.db.repo.JobVersion`: state, lease
owner, launched, last event) and kept as JSON bytes (bounded, least recently used dropped). A
finished job's view never changes again (its final state and the release of its lease are one
transaction): it is answered from memory without touching the database. An unfinished one costs
one indexed version read while it is unchanged; a page of the list reads the versions of its
jobs in one query and builds only the views that changed (their trial summaries in one batch).
Versions are read from the database, so other replicas' writes are seen too.

Between writes the answers are served from memory on the event loop: a page, or an unfinished
job's view, read at this process's write generation (``Database.generation``, moved by every
committed write of this process — submits, cancels, state changes, leases — except a running
job's progress) is answered again while the generation is unchanged and for at most
``max_stale_s``: the bound on how late a running job's new trials, and another process's (a
replica's) writes, are seen; the event stream carries each trial as it is stored. This process's
other writes are seen at once. Asked with ``refresh=True`` (the routes do), an answer past half
that bound is still given, and read again in the background (one thread, one read per answer at
a time): under steady reading a remembered answer is renewed before it expires, so readers do not
queue behind its re-read, and no answer given is older than the bound.

At most ``readers`` threads read at once: with one GIL and one database file more give no
parallelism, only more threads for the event loop (which answers the finished views) to wait
behind; the others sleep on a semaphore.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session

from service.api.schemas import Job, spec_runtime
from service.db import Database, repo
from service.db.models import JobRow
from service.db.repo import JobVersion
from service.jobs.candidates import deliveries
from service.states import FINAL_STATES

#: the version a finished job's view is kept under: valid whatever is read later
FINAL = None
#: how late another process's writes may be seen in a remembered answer (a dashboard polls each second)
MAX_STALE_S = 0.25

Generation = tuple[int, int]
log = logging.getLogger(__name__)


class JobViews:
    """JSON of job views, cached per version."""

    def __init__(self, size: int = 2048, readers: int = 4, max_stale_s: float = MAX_STALE_S) -> None:
        self.size = size
        self.max_stale_s = max_stale_s
        self._views: OrderedDict[str, tuple[JobVersion | None, bytes]] = OrderedDict()
        # answers read at a write generation, at a time: (generation, monotonic time, bytes)
        self._recent: OrderedDict[tuple[int, str], tuple[Generation, float, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._readers = threading.BoundedSemaphore(readers)
        # striped: a bounded set of locks whatever the number of jobs
        self._flights = [threading.Lock() for _ in range(64)]
        self._refreshing: set[tuple[int, str]] = set()
        self._refresher: ThreadPoolExecutor | None = None

    def recent_one(self, db: Database, job_id: str, *, refresh: bool = False) -> bytes | None:
        """A job's view answerable without the database (finished, or unchanged as far as this
        process knows), else None; ``refresh``: read it again in the background when past half
        its bound."""
        read = (lambda: self._read_one(db, job_id)) if refresh else None
        return self.finished(job_id) or self._recent_answer(db, job_id, read)

    def recent_page(self, db: Database, *, offset: int, limit: int, refresh: bool = False) -> bytes | None:
        """A page answerable without the database, else None (``refresh``: as :meth:`recent_one`)."""
        read = (lambda: self._read_page(db, offset=offset, limit=limit)) if refresh else None
        return self._recent_answer(db, f"page:{offset}:{limit}", read)

    def finished(self, job_id: str) -> bytes | None:
        """The kept view of a finished job, or None (unknown, unfinished, or dropped)."""
        return self._get(job_id, FINAL)

    def one(self, db: Database, job_id: str) -> bytes:
        """One job's view; raises NotFoundError for an unknown id."""
        with self._single_flight(db, job_id):
            body = self.recent_one(db, job_id)  # another thread may have just read it
            return body if body is not None else self._read_one(db, job_id)

    def _read_one(self, db: Database, job_id: str) -> bytes:
        read_at = db.generation, time.monotonic()  # before reading: a later write moves it
        with self._readers, db.session_scope() as s:
            version = repo.job_version(s, job_id)
            body = self._get(job_id, version)
            body = body if body is not None else self._build(s, [version])[job_id]
        self._remember(db, job_id, read_at, body)
        return body

    def page(self, db: Database, *, offset: int, limit: int) -> bytes:
        """A page of the jobs list, newest first, as ``Page[Job]`` JSON."""
        with self._single_flight(db, f"page:{offset}:{limit}"):
            body = self.recent_page(db, offset=offset, limit=limit)  # another thread may have just read it
            return body if body is not None else self._read_page(db, offset=offset, limit=limit)

    def _read_page(self, db: Database, *, offset: int, limit: int) -> bytes:
        read_at = db.generation, time.monotonic()  # before reading: a later write moves it
        with self._readers, db.session_scope() as s:
            versions, count = repo.job_page(s, offset=offset, limit=limit)
            parts: dict[str, bytes] = {}
            for v in versions:
                body = self._get(v.id, v)
                if body is not None:
                    parts[v.id] = body
            parts.update(self._build(s, [v for v in versions if v.id not in parts]))
        items = b",".join(parts[v.id] for v in versions if v.id in parts)
        body = b'{"items":[%s],"count":%d,"offset":%d,"limit":%d}' % (items, count, offset, limit)
        self._remember(db, f"page:{offset}:{limit}", read_at, body)
        return body

    @contextlib.contextmanager
    def _single_flight(self, db: Database, key: str) -> Iterator[None]:
        """One reader of ``key`` at a time: readers arriving together (a burst of clients, a
        write that made every remembered answer old) wait for the first one's answer."""
        with self._flights[hash((db.serial, key)) % len(self._flights)]:
            yield

    def _recent_answer(self, db: Database, key: str, read: Callable[[], bytes] | None = None) -> bytes | None:
        with self._lock:
            entry = self._recent.get((db.serial, key))
        if entry is None or entry[0] != db.generation:
            return None
        age = time.monotonic() - entry[1]
        if age >= self.max_stale_s:
            return None
        if read is not None and age >= self.max_stale_s / 2:
            self._refresh(db, key, read)
        return entry[2]

    def _refresh(self, db: Database, key: str, read: Callable[[], bytes]) -> None:
        """Reads ``key`` again in the background, unless a refresh of it is under way."""
        with self._lock:
            if (db.serial, key) in self._refreshing:
                return
            self._refreshing.add((db.serial, key))
            if self._refresher is None:
                self._refresher = ThreadPoolExecutor(1, thread_name_prefix="job-views")
            refresher = self._refresher

        def run() -> None:
            try:
                with self._single_flight(db, key):
                    read()
            except Exception:  # noqa: BLE001 - a reader after the bound reads it itself, and sees the error
                log.debug("refreshing %s failed", key, exc_info=True)
            finally:
                with self._lock:
                    self._refreshing.discard((db.serial, key))

        refresher.submit(run)

    def _remember(self, db: Database, key: str, read_at: tuple[Generation, float], body: bytes) -> None:
        with self._lock:
            kept = self._recent.get((db.serial, key))
            if kept is not None and kept[1] > read_at[1]:
                return  # a read begun later already answered (a refresh ending late): never go back
            self._recent[(db.serial, key)] = (*read_at, body)
            self._recent.move_to_end((db.serial, key))
            while len(self._recent) > self.size:
                self._recent.popitem(last=False)

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
        # what finalize delivered (artifacts are written with the final state): one batch
        finished = {i: spec_runtime(r.spec) for i, r in rows.items() if r.state in FINAL_STATES}
        delivered = deliveries(s, runtimes=finished)
        built = {}
        for job_id, row in rows.items():
            body = Job.from_row(row, summaries[job_id], delivered.get(job_id)).model_dump_json().encode()
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
