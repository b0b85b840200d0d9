"""The service's own exceptions: storage and lifecycle errors, translated to HTTP at the edge."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the service's errors."""


class NotFoundError(ServiceError):
    """An unknown job, artifact or upload id."""


class ConflictError(ServiceError):
    """The operation clashes with stored state (a duplicate row, a finished job)."""


class StorageError(ServiceError):
    """The database failed (unreachable, locked, schema missing).

    ``transient`` is true when trying again may succeed (a lost connection, a lock, a server
    restarting); false for an error that will repeat (bad SQL, a missing table, a bug).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class LeaseLost(ServiceError):
    """This controller no longer holds a job's lease (another took it over): stop, write nothing."""
