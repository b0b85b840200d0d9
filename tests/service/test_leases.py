"""Job leases on SQLite and PostgreSQL: claim, renew, steal when stale, fence, release; and two
in-process runners on one database sharing jobs, handing over a stolen one, cancelling across."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from service.db import Database, JobRow, TrialRow, repo
from service.runner import Runner, new_controller_id
from tests.service.conftest import wait_state
from tests.service.fakes import FakeLauncher, spec


def _jobs(db: Database, n: int) -> list[str]:
    ids = []
    with db.session_scope() as s:
        for _ in range(n):
            ids.append(repo.create_job(s, spec={}, name="j", cost_key="macs", trials_total=3).id)
            s.flush()
            time.sleep(0.002)  # distinct created_at: claims go oldest first
    return ids


def _claim(db: Database, owner: str, seconds: float = 30.0) -> str | None:
    with db.session_scope() as s:
        return repo.claim_next_job(s, owner=owner, seconds=seconds)


def _lease(db: Database, job_id: str) -> tuple[str | None, object]:
    with db.session_scope() as s:
        job = repo.get_job(s, job_id)
        return job.lease_owner, job.lease_expires_at


def test_claims_are_exclusive_oldest_first_and_skip_finished_jobs(db: Database) -> None:
    done, first, second = _jobs(db, 3)
    with db.session_scope() as s:
        repo.set_state(s, job=repo.get_job(s, done), state="succeeded")
    assert _claim(db, "A") == first
    assert _claim(db, "B") == second  # A's live lease is passed over
    assert _claim(db, "C") is None  # nothing left: the finished job is never claimed
    assert _lease(db, first)[0] == "A" and _lease(db, second)[0] == "B"
    assert _lease(db, done) == (None, None)


def test_renew_only_by_the_owner_and_release_frees_the_job(db: Database) -> None:
    (job,) = _jobs(db, 1)
    assert _claim(db, "A") == job
    _, expires = _lease(db, job)
    with db.session_scope() as s:
        assert repo.renew_lease(s, job_id=job, owner="A", seconds=60)
        assert not repo.renew_lease(s, job_id=job, owner="B", seconds=60)
        assert not repo.release_lease(s, job_id=job, owner="B")
    owner, renewed = _lease(db, job)
    assert owner == "A" and renewed > expires  # type: ignore[operator]
    with db.session_scope() as s:
        assert repo.release_lease(s, job_id=job, owner="A")
    assert _lease(db, job) == (None, None)
    assert _claim(db, "B") == job  # free again: anyone may take it


def test_a_stale_lease_is_taken_over_and_the_old_owner_is_fenced_out(db: Database) -> None:
    (job,) = _jobs(db, 1)
    assert _claim(db, "A", seconds=1.0) == job
    assert _claim(db, "B") is None  # still fresh
    time.sleep(1.3)  # A stopped renewing: its lease goes stale
    assert _claim(db, "B") == job
    with db.session_scope() as s:
        assert not repo.renew_lease(s, job_id=job, owner="A", seconds=30)  # A's next write is refused
        assert repo.renew_lease(s, job_id=job, owner="B", seconds=30)
    assert _lease(db, job)[0] == "B"


def test_an_expired_lease_nobody_took_is_still_the_owners(db: Database) -> None:
    """A database outage longer than the lease must not cost the job: nobody else took it."""
    (job,) = _jobs(db, 1)
    assert _claim(db, "A", seconds=1.0) == job
    time.sleep(1.3)
    with db.session_scope() as s:
        assert repo.renew_lease(s, job_id=job, owner="A", seconds=30)


def test_concurrent_claims_give_each_job_to_exactly_one_controller(db: Database, db_url: str) -> None:
    ids = _jobs(db, 6)
    owners = [f"c{i}" for i in range(8)]
    claimed: dict[str, list[str]] = {o: [] for o in owners}
    start = threading.Barrier(len(owners))

    def claimer(owner: str) -> None:
        own = Database(db_url)  # a replica has its own engine and connections
        try:
            start.wait()
            while (job := _claim(own, owner)) is not None:
                claimed[owner].append(job)
        finally:
            own.dispose()

    threads = [threading.Thread(target=claimer, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    got = [j for js in claimed.values() for j in js]
    assert sorted(got) == sorted(ids)  # every job claimed, none twice
    with db.session_scope() as s:
        rows = s.scalars(sa.select(JobRow)).all()
        assert {r.id: r.lease_owner for r in rows} == {j: o for o, js in claimed.items() for j in js}


def test_controller_ids_are_unique_and_name_the_host_and_pid() -> None:
    import os
    import socket

    a, b = new_controller_id(), new_controller_id()
    assert a != b and a.startswith(f"{socket.gethostname()[:120]}:{os.getpid()}:")


# --- two runners on one database --------------------------------------------------------------
@pytest.fixture
def replicas(client_factory: Callable[..., TestClient]) -> Callable[..., TestClient]:
    """Controllers on the shared test database, with short leases so takeovers are quick."""

    def make(launcher: FakeLauncher) -> TestClient:
        return client_factory(launcher, lease_seconds=1.5, job_poll_seconds=0.1)

    return make


def _runner(c: TestClient) -> Runner:
    return c.app.state.runner  # type: ignore[attr-defined,no-any-return]


def _controllers(db: Database, job_id: str) -> list[str | None]:
    with db.session_scope() as s:
        return [t.controller for t in repo.all_trials(s, job_id=job_id)]


def test_two_runners_share_jobs_and_each_job_runs_on_one(replicas: Callable[..., TestClient]) -> None:
    la, lb = FakeLauncher(delay=0.02), FakeLauncher(delay=0.02)
    a, b = replicas(la), replicas(lb)
    ids = [a.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 10})).json()["id"] for _ in range(4)]
    for job_id in ids:
        done = wait_state(a, job_id, ("succeeded", "failed"), timeout=60)
        assert done["state"] == "succeeded", done["error"]
        assert done["controller"] is None  # released when it finished
    db = _runner(a).db
    ran = {job_id: set(_controllers(db, job_id)) for job_id in ids}
    assert all(len(c) == 1 for c in ran.values()), ran  # never both on one job
    names = {_runner(a).controller_id, _runner(b).controller_id}
    assert set().union(*ran.values()) == names  # b, idle, took some of the jobs submitted to a
    assert len(la.pools) + len(lb.pools) == len(ids)  # each job launched once


def test_a_runner_that_loses_its_lease_stops_writing(replicas: Callable[..., TestClient]) -> None:
    launcher = FakeLauncher(delay=0.05)
    a = replicas(launcher)
    job_id = a.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 200})).json()["id"]
    while a.get(f"/api/v1/jobs/{job_id}/trials").json()["count"] < 3:
        time.sleep(0.02)
    db = _runner(a).db
    with db.session_scope() as s:  # another controller takes the job over
        s.execute(sa.update(JobRow).where(JobRow.id == job_id).values(lease_owner="rival"))
    deadline = time.monotonic() + 10
    while _runner(a)._active and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.05)
    assert _runner(a).is_idle(), "the job kept running after its lease was taken"
    with db.session_scope() as s:
        n = repo.count_trials(s, job_id=job_id)
        job = repo.get_job(s, job_id)
        assert job.state == "running" and job.lease_owner == "rival"  # not failed, not finished here
    time.sleep(0.5)
    with db.session_scope() as s:
        assert repo.count_trials(s, job_id=job_id) == n  # nothing written after the loss
        assert s.scalar(sa.select(sa.func.count()).select_from(TrialRow)
                        .where(TrialRow.job_id == job_id, TrialRow.controller == "rival")) == 0


def test_a_stale_job_is_resumed_by_the_other_runner_without_duplicates(replicas: Callable[..., TestClient]) -> None:
    first = FakeLauncher(delay=0.05)
    a = replicas(first)
    job_id = a.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 20})).json()["id"]
    while a.get(f"/api/v1/jobs/{job_id}/trials").json()["count"] < 4:
        time.sleep(0.02)
    ra = _runner(a)
    # a's controller freezes (no heartbeat, no writes, no release): a kill -9 as the database sees it
    ra.leases.release = lambda job_id: None  # type: ignore[method-assign]
    ra._beat_stop.set()  # noqa: SLF001
    ra._stopping.set()  # noqa: SLF001 - stops its dispatcher and the job's loop
    deadline = time.monotonic() + 10
    while ra._active and time.monotonic() < deadline:  # noqa: SLF001
        time.sleep(0.02)
    with ra.db.session_scope() as s:
        assert repo.get_job(s, job_id).lease_owner == ra.controller_id  # left leased, like a crash
    second = FakeLauncher()
    b = replicas(second)
    done = wait_state(b, job_id, ("succeeded", "failed"), timeout=30)
    assert done["state"] == "succeeded", done["error"]
    trials = b.get(f"/api/v1/jobs/{job_id}/trials", params={"limit": 100}).json()["items"]
    assert [t["trial_id"] for t in trials] == list(range(20))
    assert {t["controller"] for t in trials} == {ra.controller_id, _runner(b).controller_id}
    assert not set(first.pools[0].evaluated) & set(second.pools[0].evaluated)


def test_cancel_on_one_runner_stops_the_job_on_the_other(replicas: Callable[..., TestClient]) -> None:
    b = replicas(FakeLauncher(delay=0.05))
    job_id = b.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": 500})).json()["id"]
    wait_state(b, job_id, ("running",), timeout=10)
    a = replicas(FakeLauncher())
    r = a.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["state"] == "running"  # b runs it: b must stop it
    done = wait_state(a, job_id, ("cancelled", "succeeded", "failed"), timeout=10)
    assert done["state"] == "cancelled" and done["progress"]["trials_done"] < 500


@pytest.mark.postgres
def test_replicas_starting_together_migrate_one_at_a_time(postgres_url: str) -> None:
    """Without the migration lock, two of four processes upgrading an empty database at once died
    on ``CREATE TABLE alembic_version`` (duplicate key)."""
    import subprocess
    import sys

    from tests.service.conftest import _reset_postgres

    _reset_postgres(postgres_url)
    code = f"from service.db import upgrade; upgrade({postgres_url!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(3)]
    results = [(p.wait(120), p.stderr.read().decode()[-500:] if p.stderr else "") for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0], results
    engine = sa.create_engine(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalars().all() == ["0002"]
    engine.dispose()
