"""autoprune workers: how a policy is measured on real hardware, in parallel, on Ray.

The public names are imported lazily so that ``import workers`` (done by the service to read
``JobSpec``) loads neither torch nor Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports lazily
    from workers.artifacts import ArtifactInfo as ArtifactInfo
    from workers.artifacts import FinalizeError as FinalizeError
    from workers.evaluator import Evaluator as Evaluator
    from workers.finalize import finalize as finalize
    from workers.latency import LatencyMeter as LatencyMeter
    from workers.latency import NodeLock as NodeLock
    from workers.loop import SearchSummary as SearchSummary
    from workers.loop import run_search as run_search
    from workers.pool import InProcessPool as InProcessPool
    from workers.pool import RayPool as RayPool
    from workers.pool import make_pool as make_pool
    from workers.pool_base import Pool as Pool
    from workers.pool_base import PoolClosed as PoolClosed
    from workers.process_pool import TaskProcess as TaskProcess
    from workers.ray_driver import RayDriver as RayDriver
    from workers.ray_driver import RemotePool as RemotePool
    from workers.spec import JobSpec as JobSpec
    from workers.task import Task as Task
    from workers.task import WorkerSettings as WorkerSettings
    from workers.task import load_task as load_task

_EXPORTS = {
    "JobSpec": "workers.spec",
    "WorkerSettings": "workers.task",
    "Task": "workers.task",
    "load_task": "workers.task",
    "Evaluator": "workers.evaluator",
    "LatencyMeter": "workers.latency",
    "NodeLock": "workers.latency",
    "Pool": "workers.pool_base",
    "PoolClosed": "workers.pool_base",
    "InProcessPool": "workers.pool",
    "TaskProcess": "workers.process_pool",
    "RayPool": "workers.pool",
    "make_pool": "workers.pool",
    "RayDriver": "workers.ray_driver",
    "RemotePool": "workers.ray_driver",
    "run_search": "workers.loop",
    "agent_hints": "workers.hints",
    "measure_latency_table": "workers.latency_table",
    "SearchSummary": "workers.loop",
    "finalize": "workers.finalize",
    "ArtifactInfo": "workers.artifacts",
    "FinalizeError": "workers.artifacts",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'workers' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
