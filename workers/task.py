"""What a job evaluates: the dense model, its data, an example input and the search space.

``load_task`` is run once per job by the controller (for Ray jobs, by its Ray driver process,
:mod:`workers.ray_driver`). Ray actors do not repeat the expensive parts: a
``workers.pool.TaskFactory`` carries the dense weights (as a Ray object reference) and the built
space, and ``rebuild_task`` rebuilds the task in the actor. How is the spec's model kind's
business (:func:`workers.kinds.kind_of`).
"""

from __future__ import annotations

from typing import Any

from workers.kinds import kind_of
from workers.spec import JobSpec
from workers.task_types import Task, WorkerSettings
from workers.weights import load_weights, resolve_weights

__all__ = ["Task", "WorkerSettings", "load_task", "load_weights", "rebuild_task", "resolve_weights"]


def load_task(spec: JobSpec, settings: WorkerSettings) -> Task:
    """The job's task, loaded by its model kind (``round_to: "runtime"`` resolved on the target)."""
    from workers.latency_table import resolve_round_to

    return resolve_round_to(kind_of(spec).load_task(spec, settings))


def rebuild_task(spec: JobSpec, settings: WorkerSettings, shared: Any, space: dict[str, Any]) -> Task:
    """The task again, in a Ray actor, from the dense weights ``load_task`` built and shared
    (the state dict, or the module if it came pickled) and the built space's dict."""
    return kind_of(spec).rebuild_task(spec, settings, shared, space)
