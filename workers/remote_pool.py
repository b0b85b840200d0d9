"""The controller's pool onto a Ray pool hosted by the Ray driver process, and that process's side.

:class:`RemotePool` (in the controller) and :func:`serve_pool` (in the driver process, one
thread per pool) talk over a ``multiprocessing`` connection in the named messages of
:mod:`workers.messages`: ``OpenPool`` → ``Opened``; ``EvaluateBatch`` → ``Evaluated``…
``BatchDone``; ``Cancel``; ``WorkerPidsRequest``; ``MeasureLatencyTable``; ``Close``. The driver
process and its supervision are :mod:`workers.ray_driver`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Generator
from multiprocessing.connection import Connection
from typing import Any, Protocol, TypeVar

from agents.latency_table import LatencyTable
from agents.types import Metrics, Outcome, Proposal
from search_spaces.space import SearchSpace
from workers.messages import (
    BatchDone,
    Cancel,
    Close,
    EvaluateBatch,
    Evaluated,
    Failed,
    LatencyTableMeasured,
    MeasureLatencyTable,
    Opened,
    OpenPool,
    WorkerPids,
    WorkerPidsRequest,
)
from workers.pool_base import Pool, Retries, error_text

log = logging.getLogger("autoprune.ray")

R = TypeVar("R")


class RayUnavailable(RuntimeError):
    """Ray could not be started or reached, or the driver process died."""


class PoolHost(Protocol):
    """Where a :class:`RemotePool` connects (:class:`workers.ray_driver.RayDriver`)."""

    error: str | None  # why the host died, when it did

    def connect(self) -> Connection: ...


# --- the controller's side -----------------------------------------------------------------------
class RemotePool(Pool):
    """A job's :class:`~workers.pool.RayPool`, living in the driver process (same interface).

    ``build`` is a picklable recipe the driver runs to open the pool
    (:class:`workers.pool.JobRayPool` for a job). If the driver dies mid-evaluation, unfinished
    trials are retried once on a fresh driver (:class:`~workers.pool_base.Retries`), then
    reported failed with the cause; a dead driver never raises out of :meth:`evaluate`, so the
    job records every trial and goes on.
    """

    def __init__(self, driver: PoolHost, build: Callable[[], Any], *, max_retries: int = 1) -> None:
        super().__init__()
        self.driver, self.build, self.max_retries = driver, build, max_retries
        self.reopened = 0
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()  # cancel() may send from another thread
        self._seq = 0  # the batch in flight, when _in_flight
        self._in_flight = False
        self._space: SearchSpace | None = None
        self._dense: Metrics | None = None
        self._open()

    def _open(self) -> None:
        conn = self.driver.connect()
        try:
            conn.send(OpenPool(self.build))
            reply = conn.recv()
        except (EOFError, OSError) as exc:
            conn.close()
            raise RayUnavailable(f"the Ray driver died while starting the job's workers "
                                 f"({self.driver.error or error_text(exc)})") from exc
        if isinstance(reply, Failed):
            conn.close()
            raise RuntimeError(reply.message)
        assert isinstance(reply, Opened), reply
        self._conn, self._space, self._dense = conn, reply.space, reply.dense

    @property
    def space(self) -> SearchSpace:
        assert self._space is not None
        return self._space

    @property
    def dense_metrics(self) -> Metrics:
        assert self._dense is not None
        return self._dense

    def worker_pids(self) -> list[int]:
        return list(self._call(WorkerPidsRequest(), WorkerPids).pids)

    def latency_table(self, ratios: tuple[float, ...]) -> LatencyTable:
        """The per-group latency table, measured by one of the job's actors."""
        return self._call(MeasureLatencyTable(tuple(ratios)), LatencyTableMeasured).table

    def _call(self, request: Any, reply: type[R]) -> R:
        if self._conn is None:
            raise RayUnavailable("the pool's Ray driver connection is closed")
        self._send(request)
        msg = self._conn.recv()
        if isinstance(msg, Failed):
            raise RuntimeError(msg.message)
        assert isinstance(msg, reply), msg
        return msg

    def _send(self, msg: Any) -> None:
        assert self._conn is not None
        with self._send_lock:
            self._conn.send(msg)

    def cancel(self) -> None:
        super().cancel()
        if self._in_flight and self._conn is not None:
            with contextlib.suppress(OSError):  # a dead driver has no batch to stop
                self._send(Cancel(self._seq))

    def _evaluate(self, proposals: list[Proposal]) -> Generator[Outcome, None, None]:
        queue = list(proposals)
        retries = Retries(self.max_retries)
        while queue:
            done: set[int] = set()
            try:
                if self._conn is None:
                    self._open()
                assert self._conn is not None
                self._seq += 1
                self._in_flight = True
                self._send(EvaluateBatch(self._seq, tuple(queue)))
                while True:
                    msg = self._conn.recv()
                    if isinstance(msg, BatchDone):
                        self._in_flight = False
                        return
                    if isinstance(msg, Failed):
                        raise RayUnavailable(msg.message)
                    assert isinstance(msg, Evaluated), msg
                    done.add(msg.outcome.trial_id)
                    yield msg.outcome
            except GeneratorExit:
                if self.cancelled:
                    self._drain()  # the driver stops the batch and says so
                else:  # abandoned mid-batch: its late outcomes must not reach the next one
                    self._drop()
                raise
            except (EOFError, OSError, RayUnavailable) as exc:
                cause = self._lost(exc)
                retry: list[Proposal] = []
                for p in queue:
                    if p.trial_id in done:
                        continue
                    final = retries.worker_died(p, cause)
                    if final is None:
                        retry.append(p)
                    else:
                        yield final
                queue = retry
                if queue:
                    try:
                        self._open()
                        self.reopened += 1
                    except Exception as exc2:  # noqa: BLE001 - no Ray now: the trials fail, the job goes on
                        why = f"{cause}; a fresh Ray could not take over: {error_text(exc2)}"
                        for p in queue:
                            yield Outcome(p.trial_id, p.policy, None, why)
                        return

    def _drain(self) -> None:
        """Reads (and drops) the cancelled batch's last outcomes up to its ``BatchDone``."""
        try:
            while self._conn is not None:
                msg = self._conn.recv()
                if isinstance(msg, BatchDone) and msg.seq == self._seq:
                    self._in_flight = False
                    return
                if isinstance(msg, Failed):
                    self._drop()
        except (EOFError, OSError):
            self._drop()

    def _drop(self) -> None:
        """Forgets the connection (the driver closes that pool); the next batch opens another."""
        self._in_flight = False
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._send(Close())
            self._conn.close()
            self._conn = None

    def _lost(self, exc: BaseException) -> str:
        """Drops the dead connection; the cause as a sentence."""
        self._in_flight = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        time.sleep(0.2)  # let the watcher record why the driver died
        detail = self.driver.error or error_text(exc)
        log.warning("job lost its Ray workers: %s", detail)
        return f"Ray went down ({detail})"

    def _close(self) -> None:
        self._drop()


# --- the driver process's side -------------------------------------------------------------------
def serve_pool(conn: Connection) -> None:
    """One job's pool: open, evaluate batches (outcomes streamed as they finish), close.

    A reader thread takes the controller's messages, so that a ``Cancel`` reaches the pool
    while a batch runs; this thread answers the others in order.
    """
    import queue as queues

    pool: Any = None
    try:
        msg = conn.recv()
        try:
            assert isinstance(msg, OpenPool), msg
            pool = msg.build()
        except Exception as exc:  # noqa: BLE001 - the job fails with this message
            conn.send(Failed(error_text(exc)))
            return
        conn.send(Opened(pool.space, pool.dense_metrics))
        inbox: queues.SimpleQueue[Any] = queues.SimpleQueue()
        state = {"running": 0, "cancelled": 0}  # batch numbers

        def read() -> None:
            try:
                while True:
                    msg = conn.recv()
                    if isinstance(msg, Cancel):
                        state["cancelled"] = max(state["cancelled"], msg.seq)
                        if state["running"] == msg.seq:
                            pool.cancel()
                        continue
                    inbox.put(msg)
                    if isinstance(msg, Close):
                        return
            except (EOFError, OSError):
                pool.cancel()
                inbox.put(None)

        threading.Thread(target=read, name="autoprune-pool-reader", daemon=True).start()
        while True:
            msg = inbox.get()
            if msg is None or isinstance(msg, Close):
                return
            if isinstance(msg, WorkerPidsRequest):
                conn.send(WorkerPids(tuple(pool.worker_pids())))
            elif isinstance(msg, MeasureLatencyTable):
                try:
                    conn.send(LatencyTableMeasured(pool.latency_table(msg.ratios)))
                except Exception as exc:  # noqa: BLE001 - the job fails with this message
                    conn.send(Failed(error_text(exc)))
            elif isinstance(msg, EvaluateBatch):
                _serve_batch(conn, pool, msg, state)
            else:
                conn.send(Failed(f"the Ray driver cannot answer {type(msg).__name__}"))
    except (EOFError, OSError):
        pass  # the controller closed the pool or went away
    finally:
        if pool is not None:
            with contextlib.suppress(Exception):  # Ray may be gone already
                pool.close()
        conn.close()


def _serve_batch(conn: Connection, pool: Any, batch: EvaluateBatch, state: dict[str, int]) -> None:
    state["running"] = batch.seq
    try:
        if state["cancelled"] < batch.seq:
            for outcome in pool.evaluate(batch.proposals):
                if state["cancelled"] >= batch.seq:
                    break  # cancelled before the pool saw it
                conn.send(Evaluated(outcome))
    except (EOFError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - Ray itself failed: the controller retries
        conn.send(Failed(error_text(exc)))
        return
    finally:
        state["running"] = 0
    conn.send(BatchDone(batch.seq, cancelled=state["cancelled"] >= batch.seq))
