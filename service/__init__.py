"""autoprune's service: jobs, REST API, database, runner and CLI.

Public surface (imported lazily so that ``import service`` stays light):
``Settings``, ``create_app``, ``Runner``, ``Launched``, ``JobState``, ``Database``, ``Client``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Settings": "service.config",
    "create_app": "service.api.app",
    "Runner": "service.runner",
    "Launched": "service.launcher",
    "JobState": "service.states",
    "Database": "service.db.session",
    "Client": "service.client",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'service' has no attribute {name!r}")
