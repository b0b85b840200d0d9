r"""Evaluator pools: one in-process evaluator, or long-lived Ray actors evaluating in parallel.

Both are :class:`workers.pool_base.Pool`\ s: an :class:`Outcome` per proposal as each finishes. An
evaluation that raises becomes a failed outcome carrying the error; on Ray, an actor that dies
(killed, out of memory, node lost) is replaced and its trial retried once on a live actor
(:class:`~workers.pool_base.Retries`), then reported failed. Actors load the
dense model and data once: the dense weights and the search space travel through Ray's object
store, so workers neither retrain the reference nor rebuild the dependency graph.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agents.latency_table import LatencyTable
from agents.types import Metrics, Outcome, Proposal
from search_spaces.space import SearchSpace
from workers.messages import (
    Dense,
    Evaluated,
    EvaluateRequest,
    LatencyTableMeasured,
    MeasureLatencyTable,
)
from workers.pool_base import (
    EvaluatorLike,
    Pool,
    Retries,
    error_text,
    evaluate_one,
    latency_table_of,
)

if TYPE_CHECKING:
    from workers.spec import JobSpec
    from workers.task import Task, WorkerSettings


class InProcessPool(Pool):
    """Evaluates one proposal at a time in this process (tests, benches, debugging); no workers."""

    def __init__(self, evaluator: EvaluatorLike) -> None:
        super().__init__()
        self.evaluator = evaluator
        self._dense: Metrics | None = None

    @property
    def space(self) -> SearchSpace:
        return self.evaluator.space

    @property
    def dense_metrics(self) -> Metrics:
        if self._dense is None:
            self._dense = self.evaluator.dense_metrics()
        return self._dense

    def _evaluate(self, proposals: list[Proposal]) -> Generator[Outcome, None, None]:
        for p in proposals:
            yield evaluate_one(self.evaluator, p)

    def latency_table(self, ratios: tuple[float, ...]) -> LatencyTable:
        """The per-group latency table (``workers.latency_table``), measured here."""
        return latency_table_of(self.evaluator, ratios)

    def _close(self) -> None:
        pass


class _EvaluatorActor:
    """The Ray actor body: builds its evaluator once from a picklable factory."""

    def __init__(self, factory: Callable[[], EvaluatorLike]) -> None:
        self._evaluator = factory()

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node": socket.gethostname()}

    def dense_metrics(self) -> Dense:
        return Dense(self._evaluator.dense_metrics())

    def latency_table(self, request: MeasureLatencyTable) -> LatencyTableMeasured:
        return LatencyTableMeasured(latency_table_of(self._evaluator, request.ratios))

    def evaluate(self, request: EvaluateRequest) -> Evaluated:
        outcome = evaluate_one(self._evaluator, request.proposal)
        if outcome.metrics is not None:
            outcome.metrics.extra = {**outcome.metrics.extra, "worker_pid": os.getpid()}
        return Evaluated(outcome)


#: the embedded local Ray's object store (Ray spills to disk beyond it)
LOCAL_OBJECT_STORE_BYTES = 1 << 30


def ensure_ray(num_cpus: int | None = None) -> None:
    """Connects to ``RAY_ADDRESS`` when set, else starts an embedded local Ray (once).

    Call it from a thread that lives as long as the process (the main thread): on Linux a
    local Ray's GCS and raylet die with the thread that started them. A long-running
    controller does not call it at all: it hosts Ray in :mod:`workers.ray_driver`'s process.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    else:
        # Ray's default object store is 30 % of the host's memory, reserved in /dev/shm at start
        # (seconds of page zeroing per start); what a job shares through it is one task's state
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES)


def actor_options(
    device: str, workers: int, resources: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Ray resources for an evaluator on ``device``; fails fast if no node of that kind exists.

    ``cpu`` actors take one CPU; ``cuda`` actors share the GPUs (a fraction each when there are
    more actors than GPUs). ``resources`` (the job's ``target.resources``) further pins actors to
    nodes that advertise those custom resources (a particular phone, board or accelerator host);
    each actor takes a share so that all of them fit.
    """
    import ray

    total = ray.cluster_resources()
    options: dict[str, Any] = {"num_cpus": 1, "max_restarts": 0}
    if device == "cuda":
        gpus = total.get("GPU", 0)
        if gpus <= 0:
            raise RuntimeError(
                "target.device is 'cuda' but the Ray cluster has no node with a GPU "
                f"(cluster resources: {sorted(total)})"
            )
        options["num_gpus"] = min(1.0, gpus / max(1, workers))
    elif device != "cpu":
        raise ValueError(f"target.device must be 'cpu' or 'cuda', got {device!r}")
    elif total.get("CPU", 0) < workers:
        # each actor holds one CPU: more actors than CPUs would wait forever to be scheduled
        raise RuntimeError(
            f"workers={workers} needs {workers} CPUs but the Ray cluster has {total.get('CPU', 0):g}; "
            "lower 'workers' or add nodes"
        )
    custom: dict[str, float] = {}
    for name in resources or {}:
        if total.get(name, 0) <= 0:
            raise RuntimeError(
                f"target.resources asks for {name!r} but no node in the Ray cluster advertises it "
                f"(cluster resources: {sorted(total)})"
            )
        custom[name] = min(1.0, total[name] / max(1, workers))
    if custom:
        options["resources"] = custom
    return options


class RayPool(Pool):
    """``workers`` long-lived evaluator actors; a dead actor is replaced, its trial retried once."""

    #: how often a batch waiting on its actors looks for a cancel from another thread
    CANCEL_POLL_S = 0.2

    def __init__(
        self,
        factory: Callable[[], EvaluatorLike],
        space: SearchSpace,
        *,
        workers: int,
        device: str = "cpu",
        resources: Mapping[str, float] | None = None,
        max_retries: int = 1,
    ) -> None:
        super().__init__()
        if workers < 1:
            raise ValueError(f"workers must be >= 1 for a RayPool, got {workers}")
        ensure_ray()
        import ray

        self._space = space
        self._factory_ref = ray.put(factory)  # shipped once, shared by every (re)started actor
        self._options = actor_options(device, workers, resources)
        self._remote: Any = ray.remote(_EvaluatorActor).options(**self._options)
        self.max_retries = max_retries
        self.replaced = 0
        self.actors: list[Any] = [self._remote.remote(self._factory_ref) for _ in range(workers)]
        try:
            # wait for every actor to finish loading: a broken task fails here, with its cause
            ray.get([a.info.remote() for a in self.actors])
            self._dense = ray.get(self.actors[0].dense_metrics.remote()).metrics
        except Exception:
            self.close()
            raise

    @property
    def space(self) -> SearchSpace:
        return self._space

    @property
    def dense_metrics(self) -> Metrics:
        return self._dense

    def worker_pids(self) -> list[int]:
        import ray

        return [info["pid"] for info in ray.get([a.info.remote() for a in self.actors])]

    def latency_table(self, ratios: tuple[float, ...]) -> LatencyTable:
        """The per-group latency table, measured by one actor (measurements hold its node)."""
        import ray

        reply = ray.get(self.actors[0].latency_table.remote(MeasureLatencyTable(tuple(ratios))))
        return reply.table  # type: ignore[no-any-return]

    def _replace(self, index: int) -> None:
        import ray

        ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self._remote.remote(self._factory_ref)
        self.replaced += 1

    def _evaluate(self, proposals: list[Proposal]) -> Generator[Outcome, None, None]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        queue = deque(proposals)
        retries = Retries(self.max_retries)
        idle = deque(range(len(self.actors)))
        in_flight: dict[Any, tuple[int, Proposal]] = {}
        while queue or in_flight:
            while queue and idle:
                index, p = idle.popleft(), queue.popleft()
                in_flight[self.actors[index].evaluate.remote(EvaluateRequest(p))] = (index, p)
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=self.CANCEL_POLL_S)
            if self.cancelled:
                return  # the actors finish what they run; nobody reads it
            if not ready:
                continue
            (ref,) = ready
            index, p = in_flight.pop(ref)
            try:
                outcome = ray.get(ref).outcome
            except RayTaskError as exc:  # the actor failed outside the evaluation; it lives on
                cause = getattr(exc, "cause", None) or exc
                outcome = Outcome(p.trial_id, p.policy, None, error_text(cause))
            except RayActorError as exc:  # the actor process died: replace it, retry the trial
                self._replace(index)
                idle.append(index)
                final = retries.worker_died(p, error_text(exc))
                if final is None:
                    queue.appendleft(p)
                    continue
                outcome = final
            idle.append(index)
            yield outcome

    def _close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []


def make_pool(spec: JobSpec, settings: WorkerSettings) -> Pool:
    """The pool a job asks for: ``spec.workers == 0`` in-process, else that many Ray actors.

    The Ray pool is this process's driver (see :func:`ensure_ray`); the service uses
    :class:`workers.ray_driver.RemotePool` instead, so that Ray's death cannot end it.
    """
    if spec.workers == 0:
        from workers.evaluator import Evaluator
        from workers.task import load_task

        return InProcessPool(Evaluator(load_task(spec, settings), settings=settings))
    return make_ray_pool(spec, settings)


def make_ray_pool(spec: JobSpec, settings: WorkerSettings) -> RayPool:
    """``spec.workers`` Ray actors sharing the job's dense weights and space."""
    from workers.task import load_task

    task = load_task(spec, settings)
    ensure_ray()
    import ray

    factory = TaskFactory.from_task(task, settings, state_ref=ray.put(TaskFactory.shareable(task)))
    return RayPool(
        factory,
        task.space,
        workers=spec.workers,
        device=spec.target.device,
        resources=spec.target.resources,
    )


@dataclass
class TaskFactory:
    """Rebuilds a task inside a Ray actor from shared weights and the built space (picklable)."""

    spec_json: str
    settings: WorkerSettings
    state_ref: Any  # ray.ObjectRef of the dense state dict (the module itself if it was pickled)
    space: dict[str, Any]
    threads: int | None = None

    @classmethod
    def from_task(cls, task: Task, settings: WorkerSettings, *, state_ref: Any) -> TaskFactory:
        return cls(task.spec.model_dump_json(), settings, state_ref, task.space.to_dict())

    @staticmethod
    def shareable(task: Task) -> Any:
        """What to put in the object store: the state dict, or the module if it came pickled."""
        return task.model if task.info.get("pickled_module") else task.model.state_dict()

    def task(self) -> Task:
        import ray

        from search_spaces.registry import allow_plugins
        from workers.spec import JobSpec
        from workers.task import rebuild_task

        allow_plugins(self.settings.plugins)  # this (Ray worker) process validates like the controller
        spec = JobSpec.model_validate_json(self.spec_json)
        return rebuild_task(spec, self.settings, ray.get(self.state_ref), self.space)

    def evaluator(self, task: Task) -> EvaluatorLike:
        from workers.evaluator import Evaluator

        return Evaluator(task, settings=self.settings, threads=self.threads)

    def __call__(self) -> EvaluatorLike:
        return self.evaluator(self.task())


@dataclass
class JobRayPool:
    """Opens a job's :class:`RayPool` from its spec (picklable: the Ray driver process runs it)."""

    spec: JobSpec
    settings: WorkerSettings

    def __call__(self) -> RayPool:
        from search_spaces.registry import allow_plugins

        allow_plugins(self.settings.plugins)  # the driver process validates like the controller
        return make_ray_pool(self.spec, self.settings)


@dataclass
class FactoryRayPool:
    """Opens a :class:`RayPool` of ``workers`` actors built by ``factory`` (picklable; tests)."""

    factory: Callable[[], EvaluatorLike]
    space: SearchSpace
    workers: int = 1

    def __call__(self) -> RayPool:
        return RayPool(self.factory, self.space, workers=self.workers)
