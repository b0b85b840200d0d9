"""Name -> lazily imported object registries (Ray Tune's ``create_searcher`` style).

Used for zoo models, datasets, importance criteria and agents: listing names never imports
heavy code, and an unknown name raises an error that lists the valid ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        super().__init__(name)
        self.kind, self.name, self.valid = kind, name, valid

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.name!r}; valid: {', '.join(self.valid)}"


class Registry:
    """Maps names to ``"package.module:attribute"`` targets, imported on first use."""

    def __init__(self, kind: str, targets: dict[str, str]) -> None:
        self.kind = kind
        self._targets = dict(targets)

    def names(self) -> list[str]:
        return list(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def get(self, name: str) -> Any:
        if name not in self._targets:
            raise UnknownNameError(self.kind, name, self.names())
        return import_target(self._targets[name])


def import_target(target: str) -> Any:
    """Imports ``"package.module:attribute"`` (the ``entrypoint:`` form users write)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'package.module:function', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for {target!r}: {exc}") from exc
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ValueError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj
