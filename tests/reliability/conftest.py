"""Fixtures for the reliability suite: an in-process app on SQLite with the service's fake launcher.

Helpers count what is stored (jobs, trials, uploads, artifacts, files on disk) so hostile-input
tests can assert that a refused request changed nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.db import ArtifactRow, Database, JobRow, TrialRow, UploadRow
from tests.service.conftest import started_clients


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Builds started TestClients (lifespan entered) on a fresh SQLite file; closes them all."""
    yield from started_clients(tmp_path, f"sqlite:///{tmp_path / 'reliability.db'}")


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
