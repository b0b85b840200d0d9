"""The real launcher: builds a job's pool and finalize step from ``workers``.

Kept apart from the runner so that importing the service never imports torch or Ray; tests of
the service inject their own launcher instead.
"""

from __future__ import annotations

import os
from typing import Any

from service.config import Settings
from service.runner import Launched
from workers.spec import JobSpec


def worker_settings(settings: Settings) -> Any:
    from workers.task import WorkerSettings

    assert settings.cache_dir is not None
    return WorkerSettings(
        cache_dir=settings.cache_dir,
        data_roots=tuple(settings.data_roots),
        uploads_dir=settings.uploads_dir,
        allow_pickle=settings.allow_pickle,
    )


def launch_with_workers(spec: JobSpec, settings: Settings) -> Launched:
    """``workers: 0``: the whole task in a child process. Ray jobs: actors evaluate, the reference
    is trained and the finalize runs in child processes; only loading the (cached) task to share
    its weights with the actors stays in the controller."""
    from workers.process_pool import TaskProcess, run_in_task_process, warm_reference

    ws = worker_settings(settings)
    if spec.workers == 0:
        proc = TaskProcess(spec, ws)
        try:
            dense = proc.dense_metrics
        except BaseException:
            proc.close()
            raise
        return Launched(space=proc.space, dense_metrics=dense, pool=proc, finalize=proc.finalize)

    from workers.pool import make_pool

    if settings.ray_address and not os.environ.get("RAY_ADDRESS"):
        os.environ["RAY_ADDRESS"] = settings.ray_address
    warm_reference(spec, ws)
    pool = make_pool(spec, ws)
    return Launched(space=pool.space, dense_metrics=pool.dense_metrics, pool=pool,
                    finalize=run_in_task_process(spec, ws))
