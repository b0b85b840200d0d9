"""The messages between the controller, a task process, the Ray driver process and its actors.

One module, named types instead of bare tuples: the controller's :class:`~workers.process_pool.
TaskProcess` and :class:`~workers.ray_driver.RemotePool` send requests over a
``multiprocessing`` connection and match the replies by type; a Ray actor takes an
:class:`EvaluateRequest` and returns an :class:`Evaluated`. All are picklable.

Who sends what:

* task process: ``DenseRequest`` → ``Dense``; ``EvaluateRequest`` → ``Evaluated``;
  ``MeasureLatencyTable`` → ``LatencyTableMeasured``; ``FinalizeRequest`` → ``Progress``…,
  ``Finalized``; ``Close``. At start it says ``Ready`` or ``Failed``; any request may be answered
  ``Failed`` (raised again in the controller).
* Ray driver, one connection per pool: ``OpenPool`` → ``Opened`` | ``Failed``;
  ``EvaluateBatch`` → ``Evaluated``…, ``BatchDone`` (a ``Cancel`` ends the batch early) |
  ``Failed`` (Ray itself failed); ``WorkerPidsRequest`` → ``WorkerPids``;
  ``MeasureLatencyTable`` → ``LatencyTableMeasured`` | ``Failed``; ``Close``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.latency_table import LatencyTable
from agents.types import Metrics, Outcome, Proposal
from search_spaces.space import SearchSpace


# --- requests ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluateRequest:
    """Evaluate one proposal (task process, Ray actor)."""

    proposal: Proposal


@dataclass(frozen=True)
class EvaluateBatch:
    """Evaluate these proposals, streaming an ``Evaluated`` per proposal, then ``BatchDone``."""

    seq: int  # the pool's batch number: a Cancel names the batch it stops
    proposals: tuple[Proposal, ...]


@dataclass(frozen=True)
class DenseRequest:
    """The unpruned model's metrics."""


@dataclass(frozen=True)
class MeasureLatencyTable:
    """The per-group latency table at these pruning ratios, measured on a worker."""

    ratios: tuple[float, ...]


@dataclass(frozen=True)
class FinalizeRequest:
    """Finalize these candidates (best first) into ``out_dir`` (task process)."""

    candidates: tuple[Outcome, ...]
    out_dir: str


@dataclass(frozen=True)
class OpenPool:
    """Open a Ray pool in the driver process: ``build()`` runs there and returns a ``RayPool``
    (``workers.pool.JobRayPool`` for a job, ``FactoryRayPool`` for tests)."""

    build: Callable[[], Any]


@dataclass(frozen=True)
class WorkerPidsRequest:
    """The process ids of the pool's workers (tests kill them)."""


@dataclass(frozen=True)
class Cancel:
    """Stop batch ``seq`` if it is in flight: the driver ends it with ``BatchDone(seq, True)``."""

    seq: int


@dataclass(frozen=True)
class Close:
    """Release the workers; the peer ends the conversation."""


# --- replies -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ready:
    """The task process loaded its task."""

    space: SearchSpace


@dataclass(frozen=True)
class Opened:
    """The driver opened the pool."""

    space: SearchSpace
    dense: Metrics


@dataclass(frozen=True)
class Dense:
    metrics: Metrics


@dataclass(frozen=True)
class Evaluated:
    """One proposal's outcome (an evaluation that raised is an outcome with its error)."""

    outcome: Outcome


@dataclass(frozen=True)
class BatchDone:
    """Every outcome of batch ``seq`` was sent (or it was cancelled)."""

    seq: int
    cancelled: bool = False


@dataclass(frozen=True)
class LatencyTableMeasured:
    table: LatencyTable


@dataclass(frozen=True)
class WorkerPids:
    pids: tuple[int, ...]


@dataclass(frozen=True)
class Progress:
    """A finalize progress event, passed to the caller's ``on_progress``."""

    info: Any


@dataclass(frozen=True)
class Finalized:
    """The accepted artifacts (``workers.artifacts.ArtifactInfo``), best first."""

    artifacts: tuple[Any, ...]


@dataclass(frozen=True)
class Failed:
    """The request failed: ``message`` for the log and the job, ``exception`` to raise again
    where the peer can pickle it."""

    message: str
    exception: BaseException | None = field(default=None, compare=False)

    def error(self) -> BaseException:
        return self.exception if self.exception is not None else RuntimeError(self.message)
