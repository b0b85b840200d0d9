"""Service fixtures: settings on a temporary directory, a database URL per backend, an app client."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.db import Database, upgrade
from tests.server_process import TEST_PLUGINS
from tests.service.fakes import FakeLauncher


def _reset_postgres(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in ("uploads", "events", "artifacts", "trials", "jobs", "alembic_version"):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'autoprune.db'}"
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database on each backend, disposed of afterwards."""
    upgrade(db_url)
    database = Database(db_url)
    yield database
    database.dispose()


def make_settings(tmp_path: Path, db_url: str, **kw: Any) -> Settings:
    data_root = tmp_path / "data"
    data_root.mkdir(exist_ok=True)
    kw.setdefault("plugins", TEST_PLUGINS)
    return Settings(data_dir=tmp_path / "state", database_url=db_url, data_roots=[data_root],
                    cache_dir=reference_cache(), **kw)


def reference_cache() -> Path:
    """The shared cache of trained references (``make test`` sets AUTOPRUNE_CACHE_DIR)."""
    return Path(os.environ.get("AUTOPRUNE_CACHE_DIR") or Path.cwd() / ".cache" / "autoprune")


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


def started_clients(tmp_path: Path, default_url: str) -> Iterator[Callable[..., TestClient]]:
    """Yields a maker of started TestClients (lifespan entered, fake launcher by default) on
    ``default_url`` unless given ``db_url``; closes every client it made afterwards."""
    from service.api.app import create_app

    clients: list[TestClient] = []

    def make(launcher: Any = None, db_url: str | None = None, **kw: Any) -> TestClient:
        settings = make_settings(tmp_path, db_url or default_url, **kw)
        client = TestClient(create_app(settings, launcher=launcher or FakeLauncher()))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client_factory(tmp_path: Path, db_url: str) -> Iterator[Callable[..., TestClient]]:
    yield from started_clients(tmp_path, db_url)


@pytest.fixture
def client(client_factory: Callable[..., TestClient], launcher: FakeLauncher) -> TestClient:
    return client_factory(launcher)


def wait_state(client: TestClient, job_id: str, states: tuple[str, ...], timeout: float = 30.0,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} after {timeout}s: {job.get('error')}")
        time.sleep(0.05)
