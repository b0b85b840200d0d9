"""``Database.write_retrying``: transient errors are retried with backoff, programming errors are not.

Errors are raised by the work function itself (the DB-API error SQLAlchemy would wrap), and by
real SQL on both backends; a job whose trial write hits a programming error fails at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import exc

from service.db import Database, repo, upgrade
from service.db.session import is_transient
from service.errors import ConflictError, StorageError
from tests.service.conftest import wait_state
from tests.service.fakes import FakeLauncher, spec


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    upgrade(db_url)
    database = Database(db_url, retry_seconds=5.0)
    yield database
    database.dispose()


class Flaky:
    """A work function that raises ``error`` on its first ``failures`` calls, then returns 42."""

    def __init__(self, error: BaseException, failures: int) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    def __call__(self, _session: Any) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return 42


def _lost_connection() -> exc.OperationalError:
    return exc.OperationalError("UPDATE jobs SET ...", {}, Exception("server closed the connection unexpectedly"))


def _invalidated() -> exc.DBAPIError:
    return exc.DBAPIError("SELECT 1", {}, Exception("connection reset"), connection_invalidated=True)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


@pytest.mark.parametrize("make_error", [_lost_connection, _invalidated], ids=["operational", "invalidated"])
def test_transient_errors_are_retried_with_backoff(db: Database, make_error: Callable[[], Exception]) -> None:
    work = Flaky(make_error(), failures=2)
    value, elapsed = _timed(lambda: db.write_retrying(work))
    assert value == 42 and work.calls == 3
    assert 0.2 + 0.4 <= elapsed < 3.0  # two back-off sleeps: 0.2 s then 0.4 s


def test_a_database_that_stays_away_fails_after_retry_seconds(db: Database) -> None:
    db.retry_seconds = 1.0
    work = Flaky(_lost_connection(), failures=1000)
    t0 = time.monotonic()
    with pytest.raises(StorageError) as info:
        db.write_retrying(work)
    assert info.value.transient and "server closed the connection" in str(info.value)
    assert 0.5 <= time.monotonic() - t0 < 2.5 and work.calls >= 3


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (exc.ProgrammingError("SELECT nope", {}, Exception('relation "nope" does not exist')), StorageError),
        (exc.DataError("INSERT ...", {}, Exception("value too long for type")), StorageError),
        (exc.IntegrityError("INSERT ...", {}, Exception("duplicate key value")), ConflictError),
        (KeyError("a bug in the work function"), KeyError),
    ],
    ids=["programming", "data", "integrity", "bug"],
)
def test_programming_errors_fail_at_once(db: Database, error: Exception, raised: type[Exception]) -> None:
    work = Flaky(error, failures=1000)
    t0 = time.monotonic()
    with pytest.raises(raised) as info:
        db.write_retrying(work)
    assert work.calls == 1 and time.monotonic() - t0 < 0.15  # no retry, no back-off sleep
    if raised is StorageError:
        assert not info.value.transient  # type: ignore[attr-defined]
        assert type(error).__name__ in str(info.value)


def test_real_sql_mistake_on_each_backend_is_not_retried(db: Database) -> None:
    """A missing table: ProgrammingError on PostgreSQL, OperationalError('no such table') on SQLite."""
    calls = 0

    def work(s: Any) -> None:
        nonlocal calls
        calls += 1
        s.execute(sa.text("select * from no_such_table"))

    with pytest.raises(StorageError) as info:
        db.write_retrying(work)
    assert calls == 1 and not info.value.transient and "no_such_table" in str(info.value)


def test_is_transient_classification() -> None:
    locked = exc.OperationalError("UPDATE", {}, Exception("database is locked"))
    missing = exc.OperationalError("SELECT", {}, Exception("no such table: jobs"))
    assert is_transient(locked) and is_transient(_lost_connection()) and is_transient(_invalidated())
    assert is_transient(exc.TimeoutError("QueuePool limit reached"))
    assert not is_transient(missing)
    assert not is_transient(exc.ProgrammingError("SELECT", {}, Exception("syntax error")))
    assert not is_transient(exc.InternalError("SELECT", {}, Exception("current transaction is aborted")))


def test_job_fails_at_once_on_a_programming_error(
    client_factory: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_add_trial(*_a: Any, **_k: Any) -> None:
        raise exc.ProgrammingError("INSERT INTO trials ...", {}, Exception('column "kept" does not exist'))

    c = client_factory(FakeLauncher())
    monkeypatch.setattr(repo, "add_trial", broken_add_trial)
    t0 = time.monotonic()
    job = c.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 4})).json()
    done = wait_state(c, job["id"], ("succeeded", "failed", "cancelled"), timeout=20)
    assert done["state"] == "failed"
    assert "ProgrammingError" in done["error"] and 'column "kept" does not exist' in done["error"]
    assert time.monotonic() - t0 < 10  # not the 120 s a retried write would take
    assert c.get(f"/api/v1/jobs/{job['id']}/trials").json()["count"] == 0
