"""Evaluator pools: one in-process evaluator, or long-lived Ray actors evaluating in parallel.

Both yield an :class:`Outcome` per proposal as each finishes. An evaluation that raises becomes a
failed outcome carrying the error; on Ray, an actor that dies (killed, out of memory, node lost)
is replaced and its trial retried once on a live actor, then reported failed. Actors load the
dense model and data once: the dense weights and the search space travel through Ray's object
store, so workers neither retrain the reference nor rebuild the dependency graph.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from agents.latency_table import LatencyTable
from agents.types import Metrics, Outcome, Proposal
from search_spaces.space import SearchSpace

if TYPE_CHECKING:
    from workers.spec import JobSpec
    from workers.task import Task, WorkerSettings


class EvaluatorLike(Protocol):
    space: SearchSpace

    def dense_metrics(self) -> Metrics: ...

    def evaluate(self, policy: dict[str, float]) -> Metrics: ...


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class InProcessPool:
    """Evaluates one proposal at a time in this process (``workers: 0``; tests, debugging)."""

    def __init__(self, evaluator: EvaluatorLike) -> None:
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

    def evaluate(self, proposals: list[Proposal]) -> Iterator[Outcome]:
        for p in proposals:
            try:
                metrics = self.evaluator.evaluate(p.policy)
            except Exception as exc:  # noqa: BLE001 - a failed trial, reported with its error
                yield Outcome(p.trial_id, p.policy, None, _error(exc))
            else:
                yield Outcome(p.trial_id, p.policy, metrics, None)

    def latency_table(self, ratios: tuple[float, ...]) -> LatencyTable:
        """The per-group latency table (``workers.latency_table``), measured here."""
        from workers.latency_table import measure_latency_table

        return measure_latency_table(self.evaluator, ratios)  # type: ignore[arg-type]

    def close(self) -> None:
        pass


class _EvaluatorActor:
    """The Ray actor body: builds its evaluator once from a picklable factory."""

    def __init__(self, factory: Callable[[], EvaluatorLike]) -> None:
        self._evaluator = factory()

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node": socket.gethostname()}

    def dense_metrics(self) -> dict[str, Any]:
        return self._evaluator.dense_metrics().to_dict()

    def latency_table(self, ratios: list[float]) -> dict[str, Any]:
        from workers.latency_table import measure_latency_table

        return measure_latency_table(self._evaluator, ratios).to_dict()  # type: ignore[arg-type]

    def evaluate(self, policy: dict[str, float]) -> dict[str, Any]:
        metrics = self._evaluator.evaluate(policy)
        metrics.extra = {**metrics.extra, "worker_pid": os.getpid()}
        return metrics.to_dict()


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
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)


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


class RayPool:
    """``workers`` long-lived evaluator actors; a dead actor is replaced, its trial retried once."""

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
            self._dense = Metrics.from_dict(ray.get(self.actors[0].dense_metrics.remote()))
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

        return LatencyTable.from_dict(ray.get(self.actors[0].latency_table.remote(list(ratios))))

    def _replace(self, index: int) -> None:
        import ray

        ray.kill(self.actors[index], no_restart=True)
        self.actors[index] = self._remote.remote(self._factory_ref)
        self.replaced += 1

    def evaluate(self, proposals: list[Proposal]) -> Iterator[Outcome]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        queue = deque(proposals)
        deaths: dict[int, int] = {}
        idle = deque(range(len(self.actors)))
        in_flight: dict[Any, tuple[int, Proposal]] = {}
        while queue or in_flight:
            while queue and idle:
                index, p = idle.popleft(), queue.popleft()
                in_flight[self.actors[index].evaluate.remote(p.policy)] = (index, p)
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            index, p = in_flight.pop(ref)
            try:
                outcome = Outcome(p.trial_id, p.policy, Metrics.from_dict(ray.get(ref)), None)
            except RayTaskError as exc:  # the evaluation raised; the actor is fine
                cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                outcome = Outcome(p.trial_id, p.policy, None, _error(cause))
            except RayActorError as exc:  # the actor process died: replace it, retry the trial
                self._replace(index)
                deaths[p.trial_id] = deaths.get(p.trial_id, 0) + 1
                if deaths[p.trial_id] <= self.max_retries:
                    queue.appendleft(p)
                    idle.append(index)
                    continue
                outcome = Outcome(
                    p.trial_id,
                    p.policy,
                    None,
                    f"worker died {deaths[p.trial_id]} times: {_error(exc)}",
                )
            idle.append(index)
            yield outcome

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []


def make_pool(spec: JobSpec, settings: WorkerSettings) -> InProcessPool | RayPool:
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

    def __call__(self) -> Any:
        from workers.evaluator import Evaluator

        return Evaluator(self.task(), settings=self.settings, threads=self.threads)
