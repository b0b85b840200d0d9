"""The REST API under ``/api/v1`` (``create_app``), imported lazily to keep ``service`` light."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from service.api.app import create_app

        return create_app
    raise AttributeError(name)
