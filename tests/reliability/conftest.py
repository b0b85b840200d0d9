"""Fixtures for the reliability suite: an in-process app on SQLite with the service's fake launcher.

Helpers count what is stored (jobs, trials, uploads, artifacts, files on disk) so hostile-input
tests can assert that a refused request changed nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.db import ArtifactRow, Database, JobRow, TrialRow, UploadRow
from tests.service.conftest import make_settings
from tests.service.fakes import FakeLauncher


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Builds started TestClients (lifespan entered) on a fresh SQLite file; closes them all."""
    clients: list[TestClient] = []

    def make(launcher: Any = None, db_url: str | None = None, **kw: Any) -> TestClient:
        from service.api.app import create_app

        url = db_url or f"sqlite:///{tmp_path / 'reliability.db'}"
        app = create_app(make_settings(tmp_path, url, **kw), launcher=launcher or FakeLauncher())
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def stored_counts(client: TestClient) -> dict[str, int]:
    """Rows per table and files under the uploads and artifacts directories."""
    db: Database = client.app.state.db  # type: ignore[attr-defined]
    settings = client.app.state.settings  # type: ignore[attr-defined]
    counts: dict[str, int] = {}
    with db.session_scope() as s:
        for name, model in (("jobs", JobRow), ("trials", TrialRow), ("uploads", UploadRow),
                            ("artifacts", ArtifactRow)):
            counts[name] = s.query(model).count()
    for name, d in (("upload_files", settings.uploads_dir), ("artifact_files", settings.artifacts_dir)):
        counts[name] = sum(1 for p in Path(d).rglob("*") if p.is_file()) if Path(d).exists() else 0
    return counts
