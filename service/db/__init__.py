"""Storage: SQLAlchemy models, the ``session_scope`` and the repository functions."""

from __future__ import annotations

from service.db import repo
from service.db.migrate import upgrade
from service.db.models import ArtifactRow, Base, EventRow, JobRow, TrialRow, UploadRow
from service.db.session import Database

__all__ = ["ArtifactRow", "Base", "Database", "EventRow", "JobRow", "TrialRow", "UploadRow", "repo", "upgrade"]
