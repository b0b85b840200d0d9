"""autoprune's service: jobs, REST API, database, runner and CLI.

Public surface (imported lazily so that ``import service`` stays light):
``Settings``, ``create_app``, ``Runner``, ``Launched``, ``JobState``, ``Database``, ``Client``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports lazily
    from service.api.app import create_app as create_app
    from service.client import Client as Client
    from service.config import Settings as Settings
    from service.db.session import Database as Database
    from service.launcher import Launched as Launched
    from service.runner import Runner as Runner
    from service.states import JobState as JobState

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
