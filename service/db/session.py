"""Engines and the one ``session_scope()``: commit, roll back on error, translate, always close."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.orm import Session, sessionmaker

from service.db.notify import EVENT_JOBS, JobEvents
from service.errors import ConflictError, ServiceError, StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: ``Connection.info`` key: a statement of the transaction on it wrote (insert, update, delete)
WROTE = "autoprune.wrote"
#: ``Session.info`` key: what it wrote is a running job's progress (trials, their events, the
#: agent's state), which readers may see up to their staleness bound late (service/api/job_views.py)
PROGRESS = "autoprune.progress"
_serials = itertools.count(1)


def make_engine(url: str) -> sa.Engine:
    """An engine usable from the API's and the runner's threads at once."""
    kwargs: dict[str, Any] = {"future": True}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = sa.create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while a job thread writes; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


#: SQLite reports these as OperationalError, but they are mistakes in the SQL or the schema.
_SQLITE_PERMANENT = ("no such table", "no such column", "syntax error", "has no column")


def is_transient(e: exc.SQLAlchemyError) -> bool:
    """True for errors a retry can outlast: connection lost or refused, server restarting, lock
    timeouts, pool exhaustion. ProgrammingError, IntegrityError, DataError and the like repeat."""
    if isinstance(e, exc.DBAPIError) and e.connection_invalidated:
        return True  # SQLAlchemy recognised a disconnect
    if isinstance(e, (exc.DisconnectionError, exc.TimeoutError)):
        return True
    if isinstance(e, exc.OperationalError):
        return not any(m in str(e.orig).lower() for m in _SQLITE_PERMANENT)
    return False


class Database:
    """An engine plus its session factory, and the wake-ups of this process's event readers."""

    def __init__(self, url: str, *, retry_seconds: float = 120.0) -> None:
        self.url = url
        self.retry_seconds = retry_seconds
        self.engine = make_engine(url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self.events = JobEvents()
        #: this process's writes so far: (this Database, count of committed writing transactions,
        #: progress writes left out). Readers caching what they read compare it; writes of other
        #: processes do not move it.
        self.serial = next(_serials)
        self.writes = 0
        event.listen(self.engine, "after_cursor_execute", _mark_if_writing)

    @property
    def generation(self) -> tuple[int, int]:
        """Changes after every committed write of this process (see :attr:`writes`)."""
        return (self.serial, self.writes)

    @contextmanager
    def session_scope(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error; DB errors become ours."""
        session = self._factory()
        try:
            yield session
            session.flush()  # the ORM's writes reach the cursor now, not inside commit()
            wrote = session.in_transaction() and session.connection().info.pop(WROTE, False)
            session.commit()
            if wrote and not session.info.pop(PROGRESS, False):
                self.writes += 1
            for job_id in session.info.pop(EVENT_JOBS, ()):
                self.events.notify(job_id)
        except exc.IntegrityError as e:
            session.rollback()
            raise ConflictError(str(e.orig)) from e
        except exc.SQLAlchemyError as e:
            session.rollback()
            raise StorageError(f"{type(e).__name__}: {e}", transient=is_transient(e)) from e
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def write_retrying(self, work: Callable[[Session], T], *, progress: bool = False) -> T:
        """Runs ``work`` in its own transaction, retried with backoff while the database is away.

        For the runner's writes: a database restart must delay a job, not fail it. Only transient
        errors are retried (:func:`is_transient`); a programming error (bad SQL, a missing table,
        a constraint violated, any other exception) is raised at once, so the job fails with it.
        ``work`` must be safe to run again (the trial writer checks for a stored trial first).
        ``progress``: it writes a running job's progress (:data:`PROGRESS`).
        """
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.2
        while True:
            try:
                with self.session_scope() as session:
                    if progress:
                        session.info[PROGRESS] = True
                    return work(session)
            except StorageError as e:
                if not e.transient or time.monotonic() + delay > deadline:
                    raise
                log.warning("database unavailable, retrying in %.1f s: %s", delay, e)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def dispose(self) -> None:
        self.engine.dispose()


__all__ = ["Database", "is_transient", "make_engine", "ConflictError", "StorageError", "ServiceError"]


def _mark_if_writing(conn: sa.Connection, _cursor: Any, statement: str, _params: Any, context: Any,
                     _many: bool) -> None:
    # ORM flushes, Core statements and text alike reach the cursor here
    if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
        conn.info[WROTE] = True
