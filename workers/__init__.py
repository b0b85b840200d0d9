"""autoprune workers: how a policy is measured on real hardware, in parallel, on Ray.

The public names are imported lazily so that ``import workers`` (done by the service to read
``JobSpec``) loads neither torch nor Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "JobSpec": "workers.spec",
    "WorkerSettings": "workers.task",
    "Task": "workers.task",
    "load_task": "workers.task",
    "Evaluator": "workers.evaluator",
    "LatencyMeter": "workers.latency",
    "NodeLock": "workers.latency",
    "InProcessPool": "workers.pool",
    "RayPool": "workers.pool",
    "make_pool": "workers.pool",
    "RayDriver": "workers.ray_driver",
    "RemotePool": "workers.ray_driver",
    "run_search": "workers.loop",
    "agent_hints": "workers.hints",
    "measure_latency_table": "workers.latency_table",
    "SearchSummary": "workers.loop",
    "finalize": "workers.finalize",
    "ArtifactInfo": "workers.finalize",
    "FinalizeError": "workers.finalize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'workers' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
