"""Name -> lazily imported object registries (Ray Tune's ``create_searcher`` style).

Used for zoo models, datasets, importance criteria and agents: listing names never imports
heavy code, and an unknown name raises an error that lists the valid ones.

A registry with an entry-point ``group`` is a *plugin* registry. Besides its built-ins it holds
what the operator installed or allowed, and nothing else:

* the entry points installed distributions declare in that group (``importlib.metadata``, which
  reads metadata files and imports nothing), the way pytest and Ray find their plugins;
* ``module:function`` targets, or whole module prefixes, on the operator's allowlist
  (:func:`allow_plugins`; the service fills it from ``AUTOPRUNE_PLUGINS``).

:meth:`Registry.check` says whether a job spec may name a plugin without importing anything;
:meth:`Registry.load` imports only what ``check`` accepts, unless the caller is the operator
(``trusted=True``: the local CLI and the Python API).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
_TARGET = re.compile(rf"({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)")


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists the valid names."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        super().__init__(name)
        self.kind, self.name, self.valid = kind, name, valid

    def __str__(self) -> str:
        return f"unknown {self.kind} {self.name!r}; valid: {', '.join(self.valid)}"


class NotRegisteredError(ValueError):
    """A plugin reference that is neither registered nor allowed (a ValueError: pydantic turns it
    into a 422 on the field that named it)."""

    def __init__(self, kind: str, ref: str, choices: list[str], group: str | None) -> None:
        self.kind, self.ref, self.choices, self.group = kind, ref, choices, group
        where = f"an {group!r} entry point in an installed package, or " if group else ""
        super().__init__(
            f"{ref!r} is not a registered {kind}; registered: {', '.join(choices) or 'none'} "
            f"(the operator registers plugins: {where}the AUTOPRUNE_PLUGINS allowlist)"
        )


class DisallowedTargetError(ValueError):
    """A prefix-allowed target resolved to an object defined outside the allowed modules."""


@dataclass(frozen=True)
class Allowlist:
    """The operator's allowed ``module:function`` targets and module prefixes.

    A prefix (``mypkg.models``, also written ``mypkg.models.`` or ``mypkg.models.*``) allows that
    module and its submodules, one public attribute deep: ``mypkg.models.cnn:build``, not
    ``mypkg.models:os.system`` nor ``mypkg.models:_private``; and at load time the object must be
    defined under the prefix (a function the module merely imported is refused).
    """

    targets: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowlist:
        """From ``["mypkg.models:build", "mypkg.data."]``; ValueError naming a malformed entry."""
        targets: set[str] = set()
        prefixes: list[str] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if ":" in entry:
                if not _TARGET.fullmatch(entry):
                    raise ValueError(f"plugin allowlist entry {raw!r} is not 'package.module:function'")
                targets.add(entry)
                continue
            prefix = entry.removesuffix("*").removesuffix(".")
            if not _MODULE.fullmatch(prefix):
                raise ValueError(
                    f"plugin allowlist entry {raw!r} is neither 'package.module:function' "
                    "nor a module prefix like 'mypkg.models.'"
                )
            if prefix not in prefixes:
                prefixes.append(prefix)
        return cls(frozenset(targets), tuple(prefixes))

    def prefix_for(self, target: str) -> str | None:
        """The prefix that allows ``target`` (None when no prefix does)."""
        m = _TARGET.fullmatch(target)
        if m is None:
            return None
        module, attr = m.group(1), m.group(2)
        if "." in attr or attr.startswith("_"):
            return None
        return next((p for p in self.prefixes if module == p or module.startswith(p + ".")), None)

    def allows(self, target: str) -> bool:
        return target in self.targets or self.prefix_for(target) is not None

    def describe(self) -> list[str]:
        return [*sorted(self.targets), *(f"{p}.*" for p in self.prefixes)]

    def __bool__(self) -> bool:
        return bool(self.targets or self.prefixes)


_allowed = Allowlist()


def allow_plugins(entries: Iterable[str] | Allowlist) -> Allowlist:
    """Sets this process's plugin allowlist (replacing it) and returns the previous one.

    The controller calls it once at start-up with its settings; a Ray worker process calls it with
    the allowlist its job was shipped with. Validation of every job spec in the process reads it.
    """
    global _allowed
    previous = _allowed
    _allowed = entries if isinstance(entries, Allowlist) else Allowlist.parse(entries)
    return previous


def allowed_plugins() -> Allowlist:
    return _allowed


def entry_points(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    """The entry points of ``group`` by name (first on ``sys.path`` wins); imports nothing."""
    return _read_entry_points(group, tuple(sys.path))


@functools.lru_cache(maxsize=16)
def _read_entry_points(group: str, _path: tuple[str, ...]) -> dict[str, importlib.metadata.EntryPoint]:
    # a scan reads every installed distribution (docs/benchmarks.md, "Figures moved out of
    # comments"): once per sys.path (a restart sees new installs)
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=group):
        if not ep.name or ":" in ep.name:
            log.warning("ignoring entry point %r in %s: names may not contain ':'", ep.name, group)
            continue
        if ep.name in found:
            log.warning("entry point %r in %s is declared twice; using %s", ep.name, group, found[ep.name].value)
            continue
        found[ep.name] = ep
    return found


class Registry:
    """Maps names to ``"package.module:attribute"`` targets, imported on first use.

    With ``group`` (an entry-point group such as ``"autoprune.models"``) it also holds that
    group's installed entry points and accepts the operator's allowlisted targets.
    """

    def __init__(self, kind: str, targets: dict[str, str], *, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._targets = dict(targets)

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        return entry_points(self.group) if self.group else {}

    def names(self) -> list[str]:
        """Built-in names, then installed entry points; nothing is imported."""
        return [*self._targets, *(n for n in self._entry_points() if n not in self._targets)]

    def __contains__(self, name: object) -> bool:
        return name in self._targets or (isinstance(name, str) and name in self._entry_points())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def is_builtin(self, name: str) -> bool:
        return name in self._targets

    def target(self, name: str) -> str:
        """The ``module:attribute`` a registered name stands for, without importing it."""
        if name in self._targets:
            return self._targets[name]
        ep = self._entry_points().get(name)
        if ep is None:
            raise UnknownNameError(self.kind, name, self.names())
        return str(ep.value)

    def get(self, name: str) -> Any:
        if name in self._targets:
            return import_target(self._targets[name])
        ep = self._entry_points().get(name)
        if ep is None:
            raise UnknownNameError(self.kind, name, self.names())
        return ep.load()

    # --- plugin references: a registered name, or a target the operator allowed --------------
    def choices(self) -> list[str]:
        """What a job spec may name: registered names, then the allowlist (prefixes as ``p.*``)."""
        return [*self.names(), *(allowed_plugins().describe() if self.group else [])]

    def check(self, ref: str) -> str:
        """``ref`` when a job spec may name it; :class:`NotRegisteredError` otherwise. No import."""
        if ref in self or (self.group is not None and allowed_plugins().allows(ref)):
            return ref
        raise NotRegisteredError(self.kind, ref, self.choices(), self.group)

    def load(self, ref: str, *, trusted: bool = False) -> Any:
        """The object ``ref`` names: a registered name, an allowed target, or (``trusted``: the
        operator's own call) any ``module:function``."""
        if ref in self:
            return self.get(ref)
        if not trusted:
            self.check(ref)
        obj = import_target(ref)
        allowlist = allowed_plugins()
        prefix = None if trusted or ref in allowlist.targets else allowlist.prefix_for(ref)
        if prefix is not None:
            defined_in = str(getattr(obj, "__module__", "") or "")
            if not (defined_in == prefix or defined_in.startswith(prefix + ".")):
                raise DisallowedTargetError(
                    f"{ref!r} is defined in {defined_in or 'an unknown module'!r}, outside the allowed "
                    f"prefix {prefix + '.*'!r}: allow that target explicitly if it is meant"
                )
        return obj


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
