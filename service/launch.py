"""The real launcher: builds a job's pool and finalize step from ``workers``.

Kept apart from the runner so that importing the service never imports torch or Ray; tests of
the service inject their own launcher instead.
"""

from __future__ import annotations

import os
from typing import Any

from service.config import Settings
from service.launcher import Launched
from workers.spec import JobSpec


def worker_settings(settings: Settings) -> Any:
    from workers.task import WorkerSettings

    assert settings.cache_dir is not None
    return WorkerSettings(
        cache_dir=settings.cache_dir,
        data_roots=tuple(settings.data_roots),
        uploads_dir=settings.uploads_dir,
        allow_pickle=settings.allow_pickle,
        plugins=tuple(settings.plugins),
    )


def launch_with_workers(spec: JobSpec, settings: Settings) -> Launched:
    """``workers: 0``: the whole task in a child process; else evaluator actors in the controller's
    one Ray driver process, and finalize in a child process: never torch work in the API's process.

    The controller never calls ``ray.init()`` itself (see :mod:`workers.ray_driver`): Ray's
    death, or a job thread ending, cannot take the controller down.
    """
    from workers.process_pool import TaskProcess, run_in_task_process

    ws = worker_settings(settings)
    if spec.workers == 0:
        proc = TaskProcess(spec, ws)
        try:
            dense = proc.dense_metrics
        except BaseException:
            proc.close()
            raise
        return Launched(space=proc.space, dense_metrics=dense, pool=proc, finalize=proc.finalize)

    from workers.ray_driver import shared_driver

    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or None
    pool = shared_driver(address).open_pool(spec, ws)
    return Launched(space=pool.space, dense_metrics=pool.dense_metrics, pool=pool,
                    finalize=run_in_task_process(spec, ws))
