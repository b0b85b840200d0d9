"""A job's task in a child process: load (and train the reference), evaluate, finalize there.

The controller serves the API from the same Python process that runs the jobs' threads; torch
work in that process (training a reference, evaluating in-process, fine-tuning at finalize)
holds the GIL long enough to stall every request. :class:`TaskProcess` keeps that work in a
``spawn``-ed child: the job thread sends proposals and candidates over a pipe and gets outcomes,
progress and artifacts back, so the runner's contract is unchanged (one outcome per proposal, as
each finishes; ``close()`` at the end; a restarted controller simply starts a new child).

A child that dies mid-trial (killed, out of memory) is started again and the trial retried once,
then reported failed; a child whose parent died exits on its own (it never finalizes for a
controller that is gone).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.types import Metrics, Outcome, Proposal
from search_spaces.space import SearchSpace

if TYPE_CHECKING:
    from workers.spec import JobSpec
    from workers.task import Task, WorkerSettings


class WorkerProcessDied(RuntimeError):
    """The child process exited while the controller waited on it."""


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def finalize_outcomes(
    task: Task, candidates: list[Outcome], out_dir: Path, on_progress: Callable[[Any], None] | None
) -> list[dict[str, Any]]:
    """Finalizes ``candidates`` (best first): artifacts as dicts, with their trial ids and the
    dense model's test accuracy beside the pruned one's."""
    from workers.finalize import finalize as run_finalize

    usable = [o for o in candidates if o.metrics is not None]
    pairs = [(o.policy, o.metrics) for o in usable if o.metrics is not None]
    infos = run_finalize(task, pairs, task.spec.finalize, out_dir, on_progress=on_progress)
    dense_test = _dense_test_accuracy(task) if infos else None
    # workers' ArtifactInfo knows its rank, not the trial: ranks follow the candidates' order
    return [
        {**info.to_dict(), "trial_id": usable[info.rank - 1].trial_id,
         "metrics": {**info.metrics, "dense_test_accuracy": dense_test}}
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


# --- the child -----------------------------------------------------------------------------------
def _exit_with_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.5)


def _child(conn: Connection, spec_json: str, settings: WorkerSettings, parent: int) -> None:
    """The child's loop: one request at a time, answered on ``conn``."""
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    from search_spaces.registry import allow_plugins
    from workers.evaluator import Evaluator
    from workers.spec import JobSpec
    from workers.task import load_task

    allow_plugins(settings.plugins)  # a spawned process: validates like the controller
    try:
        task = load_task(JobSpec.model_validate_json(spec_json), settings)
    except BaseException as exc:  # noqa: BLE001 - the job's failure, reported to the controller
        conn.send(("failed", _picklable(exc)))
        return
    conn.send(("ready", task.space.to_dict()))
    evaluator: Evaluator | None = None
    while True:
        try:
            msg = conn.recv()
        except EOFError:  # the controller closed the pipe
            return
        kind = msg[0]
        if kind == "close":
            return
        try:
            if kind in ("dense", "evaluate") and evaluator is None:
                evaluator = Evaluator(task, settings=settings)
            if kind == "dense":
                assert evaluator is not None
                conn.send(("dense", evaluator.dense_metrics().to_dict()))
            elif kind == "evaluate":
                assert evaluator is not None
                trial_id, policy = msg[1], msg[2]
                try:
                    metrics = evaluator.evaluate(policy)
                except Exception as exc:  # noqa: BLE001 - a failed trial, reported with its error
                    conn.send(("outcome", trial_id, None, _error(exc)))
                else:
                    metrics.extra = {**metrics.extra, "worker_pid": os.getpid()}
                    conn.send(("outcome", trial_id, metrics.to_dict(), None))
            elif kind == "latency_table":  # the knapsack agent's hint, measured where the model is
                from workers.latency_table import measure_latency_table

                evaluator = evaluator or Evaluator(task, settings=settings)
                conn.send(("latency_table", measure_latency_table(evaluator, msg[1]).to_dict()))
            elif kind == "finalize":
                candidates = [Outcome(t, p, Metrics.from_dict(m) if m else None) for t, p, m in msg[1]]
                artifacts = finalize_outcomes(task, candidates, Path(msg[2]),
                                              lambda info: conn.send(("progress", info)))
                conn.send(("finalized", artifacts))
        except BaseException as exc:  # noqa: BLE001 - raised again in the controller
            conn.send(("error", _picklable(exc)))


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - an exception type that does not survive pickling
        return RuntimeError(_error(exc))
    return exc


# --- the controller's side -------------------------------------------------------------------
class TaskProcess:
    """The job's task in a child process; an evaluator pool (``workers: 0``) and its finalize."""

    def __init__(self, spec: JobSpec, settings: WorkerSettings, *, max_retries: int = 1,
                 start_timeout: float | None = None) -> None:
        self._spec_json = spec.model_dump_json()
        self._settings = settings
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
        proc = ctx.Process(target=_child, args=(child_end, self._spec_json, self._settings, os.getpid()),
                           name="autoprune-task", daemon=True)
        proc.start()
        child_end.close()
        self._proc, self._conn = proc, parent_end
        msg = self._recv(timeout)
        if msg[0] == "failed":
            self.close()
            raise msg[1]
        return SearchSpace.from_dict(msg[1])

    def _recv(self, timeout: float | None = None) -> tuple[Any, ...]:
        assert self._conn is not None
        ready = wait([self._conn, self._proc.sentinel], timeout)
        if self._conn in ready:
            with contextlib.suppress(EOFError):
                return self._conn.recv()  # type: ignore[no-any-return]
        if not ready:
            raise TimeoutError("the task process did not answer in time")
        self._proc.join(5)
        raise WorkerProcessDied(f"the task process died (exit code {self._proc.exitcode})")

    def close(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            with contextlib.suppress(OSError, BrokenPipeError):
                conn.send(("close",))
            conn.close()
        if proc is not None:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else int(self._proc.pid)

    # the pool contract
    @property
    def space(self) -> SearchSpace:
        return self._space

    @property
    def dense_metrics(self) -> Metrics:
        with self._lock:
            if self._dense is None:
                self._send(("dense",))
                self._dense = Metrics.from_dict(self._expect("dense")[1])
            return self._dense

    def evaluate(self, proposals: list[Proposal]) -> Iterator[Outcome]:
        for p in proposals:
            with self._lock:
                outcome = self._evaluate_one(p)
            yield outcome

    def _evaluate_one(self, p: Proposal) -> Outcome:
        deaths = 0
        while True:
            try:
                self._send(("evaluate", p.trial_id, dict(p.policy)))
                msg = self._expect("outcome")
            except WorkerProcessDied as exc:
                deaths += 1
                self.close()
                self._space = self._start()
                self.restarts += 1
                if deaths > self.max_retries:
                    return Outcome(p.trial_id, p.policy, None, f"worker died {deaths} times: {exc}")
                continue
            metrics = Metrics.from_dict(msg[2]) if msg[2] is not None else None
            return Outcome(p.trial_id, p.policy, metrics, msg[3])

    def latency_table(self, ratios: tuple[float, ...]) -> Any:
        """The per-group latency table (``workers.latency_table``), measured in the child."""
        from agents.latency_table import LatencyTable

        with self._lock:
            self._send(("latency_table", list(ratios)))
            return LatencyTable.from_dict(self._expect("latency_table")[1])

    def finalize(self, candidates: list[Outcome], out_dir: Path,
                 on_progress: Callable[[Any], None] | None = None) -> list[dict[str, Any]]:
        wire = [(o.trial_id, dict(o.policy), o.metrics.to_dict() if o.metrics else None) for o in candidates]
        with self._lock:
            self._send(("finalize", wire, str(out_dir)))
            while True:
                msg = self._expect("finalized", "progress")
                if msg[0] == "finalized":
                    return list(msg[1])
                if on_progress is not None:
                    on_progress(msg[1])

    # wire
    def _send(self, msg: tuple[Any, ...]) -> None:
        if self._conn is None:
            raise WorkerProcessDied("the task process is closed")
        try:
            self._conn.send(msg)
        except (BrokenPipeError, OSError) as exc:
            raise WorkerProcessDied(f"the task process is gone: {exc}") from None

    def _expect(self, *kinds: str) -> tuple[Any, ...]:
        msg = self._recv()
        if msg[0] == "error":
            raise msg[1]
        if msg[0] not in kinds:
            raise RuntimeError(f"task process answered {msg[0]!r}, expected {kinds}")
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


def run_in_task_process(spec: JobSpec, settings: WorkerSettings) -> Callable[..., list[dict[str, Any]]]:
    """A finalize step that loads the task in a child process only when called (Ray jobs)."""

    def finalize(candidates: list[Outcome], out_dir: Path,
                 on_progress: Callable[[Any], None] | None = None) -> list[dict[str, Any]]:
        proc = TaskProcess(spec, settings)
        try:
            return proc.finalize(candidates, out_dir, on_progress)
        finally:
            proc.close()

    return finalize
