"""The one evaluator-pool interface every pool implements, and retry-once for pools with workers.

A pool turns proposals into outcomes: :meth:`Pool.evaluate` yields one :class:`Outcome` per
proposal (carrying its trial id, each exactly once) as each finishes. The loop
(:func:`workers.loop.run_search`), the agents' hints (:func:`workers.hints.agent_hints`) and the
service's launcher use this type and nothing else; the implementations are
:class:`~workers.pool.InProcessPool`, :class:`~workers.pool.RayPool`,
:class:`~workers.process_pool.TaskProcess` and :class:`~workers.ray_driver.RemotePool`, and
``tests/workers/pool_contract.py`` is the contract they all pass.

Cancel and close, defined once here:

* :meth:`Pool.cancel` stops the batch in flight: the ``evaluate`` iterator ends without
  reporting the outcomes it has not reported yet (an evaluation already running on a worker may
  finish, unreported). The pool stays usable: the next ``evaluate`` reports only its own batch.
  With no batch in flight it does nothing. It may be called from another thread.
* :meth:`Pool.close` releases the workers; a second call does nothing. ``evaluate`` on a closed
  pool raises :class:`PoolClosed`. A pool is also a context manager that closes on exit.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from agents.latency_table import LatencyTable
from agents.types import Metrics, Outcome, Proposal
from search_spaces.space import SearchSpace


class PoolClosed(RuntimeError):
    """``evaluate`` (or a measurement) was asked of a closed pool."""


def error_text(exc: BaseException) -> str:
    """An exception as a failed outcome's error: ``Type: message``."""
    return f"{type(exc).__name__}: {exc}"


class EvaluatorLike(Protocol):
    """What a pool evaluates with (:class:`workers.evaluator.Evaluator`, the tests' fakes)."""

    space: SearchSpace

    def dense_metrics(self) -> Metrics: ...

    def evaluate(self, policy: dict[str, float]) -> Metrics: ...


@runtime_checkable
class MeasuresLatencyTable(Protocol):
    """An evaluator that measures its own latency table (test doubles, other runtimes)."""

    def latency_table(self, ratios: Sequence[float]) -> LatencyTable: ...


def latency_table_of(evaluator: EvaluatorLike, ratios: Sequence[float]) -> LatencyTable:
    """The per-group latency table measured by ``evaluator`` on this worker."""
    if isinstance(evaluator, MeasuresLatencyTable):
        return evaluator.latency_table(ratios)
    from workers.latency_table import measure_latency_table

    return measure_latency_table(evaluator, ratios)  # type: ignore[arg-type]


def evaluate_one(evaluator: EvaluatorLike, proposal: Proposal) -> Outcome:
    """``proposal``'s outcome; an evaluation that raises is a failed outcome with its error."""
    try:
        metrics = evaluator.evaluate(dict(proposal.policy))
    except Exception as exc:  # noqa: BLE001 - a failed trial, reported with its error
        return Outcome(proposal.trial_id, proposal.policy, None, error_text(exc))
    return Outcome(proposal.trial_id, proposal.policy, metrics, None)


class TaskSource(Protocol):
    """Builds a job's task and its evaluator inside a worker process (picklable).

    :class:`~workers.pool.TaskFactory` rebuilds a loaded task from shared weights (Ray actors);
    :class:`~workers.process_pool.LoadTask` loads it (the task process); tests pass fakes.
    ``task()`` is the slow part, done once per process; the result has a ``space``.
    """

    def task(self) -> Any: ...

    def evaluator(self, task: Any) -> EvaluatorLike: ...


class Retries:
    """Retry-once, for every pool with workers: a trial whose worker died is retried on a fresh
    worker up to ``max_retries`` times, then it is a failed outcome naming the deaths."""

    def __init__(self, max_retries: int = 1) -> None:
        self.max_retries = max_retries
        self._deaths: dict[int, int] = {}

    def worker_died(self, proposal: Proposal, cause: str) -> Outcome | None:
        """``None``: evaluate ``proposal`` again; else its final, failed outcome."""
        n = self._deaths[proposal.trial_id] = self._deaths.get(proposal.trial_id, 0) + 1
        if n <= self.max_retries:
            return None
        return Outcome(proposal.trial_id, proposal.policy, None,
                       f"worker died {n} times during this trial: {cause}")


P = TypeVar("P", bound="Pool")


class Pool(ABC):
    """An evaluator pool (see the module docstring for the contract)."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._closed = False

    # what a pool is -----------------------------------------------------------------------------
    @property
    @abstractmethod
    def space(self) -> SearchSpace:
        """The job's search space."""

    @property
    @abstractmethod
    def dense_metrics(self) -> Metrics:
        """The unpruned model's metrics."""

    @abstractmethod
    def latency_table(self, ratios: tuple[float, ...]) -> LatencyTable:
        """The per-group latency table at ``ratios``, measured on one worker."""

    @abstractmethod
    def _evaluate(self, proposals: list[Proposal]) -> Generator[Outcome, None, None]:
        """One outcome per proposal as each finishes; may stop early once :attr:`cancelled`."""

    @abstractmethod
    def _close(self) -> None:
        """Releases the workers (called once)."""

    # the contract, implemented once -------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def cancelled(self) -> bool:
        """Whether the batch in flight was cancelled."""
        return self._cancel.is_set()

    def evaluate(self, proposals: Sequence[Proposal]) -> Iterator[Outcome]:
        """Yields an outcome per proposal as each finishes, until the batch ends or is cancelled."""
        if self._closed:
            raise PoolClosed(f"{type(self).__name__} is closed")
        self._cancel.clear()
        batch = list(proposals)
        if not batch:
            return
        outcomes = self._evaluate(batch)
        try:
            for outcome in outcomes:
                if self._cancel.is_set():
                    return
                yield outcome
                if self._cancel.is_set():
                    return
        finally:
            outcomes.close()

    def cancel(self) -> None:
        """Stops the batch in flight: its unreported outcomes are never reported."""
        self._cancel.set()

    def close(self) -> None:
        """Releases the workers; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._cancel.set()
        self._close()

    def __enter__(self: P) -> P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
