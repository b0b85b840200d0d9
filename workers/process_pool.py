"""A job's task in a child process: load (and train the reference), evaluate, finalize there.

The controller serves the API from the same Python process that runs the jobs' threads; torch
work in that process (training a reference, evaluating in-process, fine-tuning at finalize)
holds the GIL long enough to stall every request. :class:`TaskProcess` keeps that work in a
``spawn``-ed child: the job thread sends proposals and candidates over a pipe and gets outcomes,
progress and artifacts back (the named messages of :mod:`workers.messages`); it is a
:class:`~workers.pool_base.Pool` like the others (one outcome per proposal, as each finishes;
``close()`` at the end; a restarted controller simply starts a new child).

A child that dies mid-trial (killed, out of memory) is started again and the trial retried once,
then reported failed; a child whose parent died exits on its own (it never finalizes for a
controller that is gone).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from agents.latency_table import LatencyTable
from agents.types import Metrics, Outcome, Proposal
from search_spaces.space import SearchSpace
from workers.artifacts import ArtifactInfo
from workers.messages import (
    Close,
    Dense,
    DenseRequest,
    Evaluated,
    EvaluateRequest,
    Failed,
    Finalized,
    FinalizeRequest,
    LatencyTableMeasured,
    MeasureLatencyTable,
    Progress,
    Ready,
)
from workers.pool_base import (
    EvaluatorLike,
    Pool,
    Retries,
    TaskSource,
    error_text,
    evaluate_one,
    latency_table_of,
)

if TYPE_CHECKING:
    from workers.spec import JobSpec
    from workers.task import Task, WorkerSettings

R = TypeVar("R")


class WorkerProcessDied(RuntimeError):
    """The child process exited while the controller waited on it."""


def finalize_outcomes(
    task: Task, candidates: list[Outcome], out_dir: Path, on_progress: Callable[[Any], None] | None
) -> list[ArtifactInfo]:
    """Finalizes ``candidates`` (best first): the accepted artifacts, each with its candidate's
    ``trial_id`` and the dense model's test accuracy (``dense_test_accuracy``) in its metrics."""
    from workers.finalize import finalize as run_finalize

    usable = [o for o in candidates if o.metrics is not None]
    pairs = [(o.policy, o.metrics) for o in usable if o.metrics is not None]
    infos = run_finalize(task, pairs, task.spec.finalize, out_dir, on_progress=on_progress)
    dense_test = _dense_test_accuracy(task) if infos else None
    # finalize knows an artifact's rank, not its trial: ranks follow the candidates' order
    return [
        dataclasses.replace(info, trial_id=usable[info.rank - 1].trial_id,
                            metrics={**info.metrics, "dense_test_accuracy": dense_test})
        for info in infos
    ]


def _dense_test_accuracy(task: Task) -> float | None:
    """The dense model's test-split accuracy, for the report next to the pruned one's."""
    ref = task.info.get("reference") or {}
    if ref.get("test_accuracy") is not None:
        return float(ref["test_accuracy"])
    if task.spec.metric != "accuracy":
        return None
    from search_spaces.training import evaluate_accuracy

    return float(evaluate_accuracy(task.model, task.splits.test))


@dataclass
class LoadTask:
    """The real task source of a task process: ``load_task`` (training the reference if need be)
    and an :class:`~workers.evaluator.Evaluator` on it (picklable: it travels to the child)."""

    spec_json: str
    settings: WorkerSettings

    def task(self) -> Task:
        from search_spaces.registry import allow_plugins
        from workers.spec import JobSpec
        from workers.task import load_task

        allow_plugins(self.settings.plugins)  # a spawned process: validates like the controller
        return load_task(JobSpec.model_validate_json(self.spec_json), self.settings)

    def evaluator(self, task: Task) -> EvaluatorLike:
        from workers.evaluator import Evaluator

        return Evaluator(task, settings=self.settings)


# --- the child -----------------------------------------------------------------------------------
def _exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.5)


def _child(conn: Connection, source: TaskSource, parent: int) -> None:
    """The child's loop: one request at a time, answered on ``conn``."""
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    try:
        task = source.task()
    except BaseException as exc:  # noqa: BLE001 - the job's failure, reported to the controller
        conn.send(Failed(error_text(exc), _picklable(exc)))
        return
    conn.send(Ready(task.space))
    evaluator: EvaluatorLike | None = None
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the controller closed the pipe
            return
        if isinstance(msg, Close):
            return
        try:
            if isinstance(msg, (DenseRequest, EvaluateRequest, MeasureLatencyTable)) and evaluator is None:
                evaluator = source.evaluator(task)
            if isinstance(msg, DenseRequest):
                assert evaluator is not None
                conn.send(Dense(evaluator.dense_metrics()))
            elif isinstance(msg, EvaluateRequest):
                assert evaluator is not None
                outcome = evaluate_one(evaluator, msg.proposal)
                if outcome.metrics is not None:
                    outcome.metrics.extra = {**outcome.metrics.extra, "worker_pid": os.getpid()}
                conn.send(Evaluated(outcome))
            elif isinstance(msg, MeasureLatencyTable):  # the knapsack's hint, measured where the model is
                assert evaluator is not None
                conn.send(LatencyTableMeasured(latency_table_of(evaluator, msg.ratios)))
            elif isinstance(msg, FinalizeRequest):
                artifacts = finalize_outcomes(task, list(msg.candidates), Path(msg.out_dir),
                                              lambda info: conn.send(Progress(info)))
                conn.send(Finalized(tuple(artifacts)))
            else:
                raise TypeError(f"the task process cannot answer {type(msg).__name__}")
        except BaseException as exc:  # noqa: BLE001 - raised again in the controller
            conn.send(Failed(error_text(exc), _picklable(exc)))


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - an exception type that does not survive pickling
        return RuntimeError(error_text(exc))
    return exc


# --- the controller's side -------------------------------------------------------------------
class TaskProcess(Pool):
    """The job's task in a child process: a pool of one worker (``workers: 0``) and its finalize.

    ``factory`` builds the task and its evaluator in the child (default: :class:`LoadTask` of
    ``spec``); tests pass fakes. A child that dies mid-trial is started again and the trial
    retried once (:class:`~workers.pool_base.Retries`), then reported failed.
    """

    def __init__(self, spec: JobSpec | None = None, settings: WorkerSettings | None = None, *,
                 factory: TaskSource | None = None, max_retries: int = 1,
                 start_timeout: float | None = None) -> None:
        super().__init__()
        if factory is None:
            if spec is None or settings is None:
                raise ValueError("a TaskProcess needs a spec and settings, or a task factory")
            factory = LoadTask(spec.model_dump_json(), settings)
        self._source = factory
        self.max_retries = max_retries
        self.restarts = 0
        self._lock = threading.Lock()  # one request in flight: the job thread is the only caller
        self._proc: Any = None
        self._conn: Connection | None = None
        self._dense: Metrics | None = None
        self._space = self._start(start_timeout)

    # lifecycle
    def _start(self, timeout: float | None = None) -> SearchSpace:
        ctx = mp.get_context("spawn")  # never fork a process that holds the API's threads
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(child_end, self._source, os.getpid()),
                           name="autoprune-task", daemon=True)
        proc.start()
        child_end.close()
        self._proc, self._conn = proc, parent_end
        msg = self._recv(timeout)
        if isinstance(msg, Failed):
            self._stop_child()
            self._closed = True
            raise msg.error()
        assert isinstance(msg, Ready), msg
        return msg.space

    def _recv(self, timeout: float | None = None) -> Any:
        assert self._conn is not None
        ready = wait([self._conn, self._proc.sentinel], timeout)
        if self._conn in ready:
            with contextlib.suppress(EOFError):
                return self._conn.recv()
        if not ready:
            raise TimeoutError("the task process did not answer in time")
        self._proc.join(5)
        raise WorkerProcessDied(f"the task process died (exit code {self._proc.exitcode})")

    def _stop_child(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send(Close())
            conn.close()
        if proc is not None:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    def _close(self) -> None:
        self._stop_child()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else int(self._proc.pid)

    def worker_pids(self) -> list[int]:
        return [] if self.pid is None else [self.pid]

    # the pool contract
    @property
    def space(self) -> SearchSpace:
        return self._space

    @property
    def dense_metrics(self) -> Metrics:
        with self._lock:
            if self._dense is None:
                self._dense = self._request(DenseRequest(), Dense).metrics
            return self._dense

    def _evaluate(self, proposals: list[Proposal]) -> Generator[Outcome, None, None]:
        retries = Retries(self.max_retries)
        for p in proposals:
            if self.cancelled:
                return
            with self._lock:
                outcome = self._evaluate_one(p, retries)
            yield outcome

    def _evaluate_one(self, p: Proposal, retries: Retries) -> Outcome:
        while True:
            try:
                return self._request(EvaluateRequest(p), Evaluated).outcome
            except WorkerProcessDied as exc:
                self._stop_child()  # a fresh child for the retry, or for the next trial
                self._space = self._start()
                self.restarts += 1
                final = retries.worker_died(p, str(exc))
                if final is not None:
                    return final

    def latency_table(self, ratios: tuple[float, ...]) -> LatencyTable:
        """The per-group latency table (``workers.latency_table``), measured in the child."""
        with self._lock:
            return self._request(MeasureLatencyTable(tuple(ratios)), LatencyTableMeasured).table

    def finalize(self, candidates: list[Outcome], out_dir: Path,
                 on_progress: Callable[[Any], None] | None = None) -> list[ArtifactInfo]:
        """:func:`finalize_outcomes` in the child, its progress passed to ``on_progress``."""
        with self._lock:
            self._send(FinalizeRequest(tuple(candidates), str(out_dir)))
            while True:
                msg = self._reply(Finalized, Progress)
                if isinstance(msg, Finalized):
                    return list(msg.artifacts)
                if on_progress is not None:
                    on_progress(msg.info)

    # wire
    def _request(self, msg: Any, reply: type[R]) -> R:
        self._send(msg)
        return self._reply(reply)

    def _send(self, msg: Any) -> None:
        if self._conn is None:
            raise WorkerProcessDied("the task process is closed")
        try:
            self._conn.send(msg)
        except (BrokenPipeError, OSError) as exc:
            raise WorkerProcessDied(f"the task process is gone: {exc}") from None

    def _reply(self, *kinds: type) -> Any:
        msg = self._recv()
        if isinstance(msg, Failed):
            raise msg.error()
        if not isinstance(msg, kinds):
            raise RuntimeError(f"task process answered {type(msg).__name__}, expected {kinds}")
        return msg


def _train_reference(spec_json: str, settings: WorkerSettings) -> None:
    from search_spaces.reference import train_reference
    from search_spaces.registry import allow_plugins
    from workers.spec import JobSpec

    allow_plugins(settings.plugins)
    spec = JobSpec.model_validate_json(spec_json)
    assert spec.model.zoo is not None
    train_reference(spec.model.zoo, spec.dataset.name, cache_dir=settings.cache_dir, seed=spec.seed)


def warm_reference(spec: JobSpec, settings: WorkerSettings) -> None:
    """Trains (or finds cached) the job's zoo reference in a child process, so that the
    controller's own ``load_task`` only reads it from the cache. Errors are left to that call."""
    if spec.model.weights is not None or spec.model.zoo is None or ":" in spec.model.zoo:
        return
    proc = mp.get_context("spawn").Process(target=_train_reference, args=(spec.model_dump_json(), settings),
                                           name="autoprune-reference", daemon=True)
    proc.start()
    proc.join()


def run_in_task_process(spec: JobSpec, settings: WorkerSettings) -> Callable[..., list[ArtifactInfo]]:
    """A finalize step that loads the task in a child process only when called (Ray jobs)."""

    def finalize(candidates: list[Outcome], out_dir: Path,
                 on_progress: Callable[[Any], None] | None = None) -> list[ArtifactInfo]:
        with TaskProcess(spec, settings) as proc:
            return proc.finalize(candidates, out_dir, on_progress)

    return finalize
