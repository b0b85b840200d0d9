"""The database goes away for a while: PostgreSQL stopped mid-job, then started again.

Runs on a cluster of its own (``pg_createcluster 15 faults --port 5433``), never the shared one on
5432 other tests use. Creating and stopping clusters needs root: skipped with the reason on a
developer machine without it, failed in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import _unavailable
from tests.service.fakes import FakeLauncher, spec

VERSION, CLUSTER, PORT = "15", "faults", 5433
URL = f"postgresql+psycopg://autoprune:autoprune@127.0.0.1:{PORT}/autoprune_faults"


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120).stdout


def _psql(sql: str) -> None:
    _run("runuser", "-u", "postgres", "--", "psql", "-p", str(PORT), "-v", "ON_ERROR_STOP=1", "-c", sql)


def _ctl(action: str) -> None:
    _run("pg_ctlcluster", VERSION, CLUSTER, action, *(["-m", "fast"] if action == "stop" else []))


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[str]:
    """A private PostgreSQL 15 cluster on port 5433 with role/db ``autoprune``; dropped afterwards."""
    if os.geteuid() != 0:
        _unavailable("stopping PostgreSQL needs root (pg_createcluster/pg_ctlcluster on a private cluster)")
    if not shutil.which("pg_createcluster") or not shutil.which("runuser"):
        _unavailable("pg_createcluster (postgresql-common) or runuser is not installed")
    if CLUSTER in _run("pg_lsclusters", "--no-header"):
        _run("pg_dropcluster", "--stop", VERSION, CLUSTER)  # a leftover from an interrupted run
    _run("pg_createcluster", VERSION, CLUSTER, "--port", str(PORT), "--start")
    try:
        _psql("CREATE ROLE autoprune LOGIN PASSWORD 'autoprune'")
        _psql("CREATE DATABASE autoprune_faults OWNER autoprune")
        yield URL
    finally:
        subprocess.run(["pg_dropcluster", "--stop", VERSION, CLUSTER], capture_output=True, timeout=120)


def _start_job(c: TestClient, trials: int) -> str:
    job_id = str(c.post("/api/v1/jobs", json=spec(agent={"kind": "random", "trials": trials}, workers=1)).json()["id"])
    deadline = time.monotonic() + 60
    while c.get(f"/api/v1/jobs/{job_id}/trials").json()["count"] < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return job_id


@pytest.mark.slow
def test_postgres_restart_mid_job_loses_nothing(app_factory: Callable[..., TestClient], own_postgres: str) -> None:
    c = app_factory(FakeLauncher(delay=0.1), db_url=own_postgres)
    trials = 30
    job_id = _start_job(c, trials)
    _ctl("stop")
    time.sleep(3.0)  # the job keeps evaluating and tries to commit while the database is gone
    _ctl("start")
    deadline = time.monotonic() + 30  # ~3 s of fake evaluations are left: 30 s is ample
    done: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            done = c.get(f"/api/v1/jobs/{job_id}").json()
        except Exception:  # noqa: BLE001 - the pool may hand out a dead connection once more
            done = {}
        if done.get("state") in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert done.get("state") == "succeeded", {k: done.get(k) for k in ("state", "error", "progress")}
    items = c.get(f"/api/v1/jobs/{job_id}/trials", params={"limit": 100}).json()["items"]
    assert [t["trial_id"] for t in items] == list(range(trials))  # none lost, none twice


def test_api_says_503_while_the_database_is_down(app_factory: Callable[..., TestClient],
                                                 own_postgres: str) -> None:
    c = app_factory(FakeLauncher(delay=0.1), db_url=own_postgres)
    job_id = _start_job(c, 10)
    raw = TestClient(c.app, raise_server_exceptions=False)  # what a real HTTP client would receive
    _ctl("stop")
    try:
        r = raw.get(f"/api/v1/jobs/{job_id}")
    finally:
        _ctl("start")
    assert r.status_code == 503, (r.status_code, r.text[:200])
    assert "database" in r.json()["detail"].lower()
