"""The real launcher: builds a job's pool and finalize step from ``workers``.

Kept apart from the runner so that importing the service never imports torch or Ray; tests of
the service inject their own launcher instead.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from agents.types import Outcome
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
        plugins=tuple(settings.plugins),
    )


def make_job_pool(spec: JobSpec, settings: Settings, ws: Any) -> Any:
    """In-process for ``workers: 0``; else actors in the controller's one Ray driver process.

    The controller never calls ``ray.init()`` itself (see :mod:`workers.ray_driver`): Ray's
    death, or a job thread ending, cannot take the controller down.
    """
    if spec.workers == 0:
        from workers.pool import make_pool

        return make_pool(spec, ws)
    from workers.ray_driver import shared_driver

    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or None
    return shared_driver(address).open_pool(spec, ws)


def launch_with_workers(spec: JobSpec, settings: Settings) -> Launched:
    ws = worker_settings(settings)
    pool = make_job_pool(spec, settings, ws)
    task_lock = threading.Lock()
    task_box: list[Any] = []

    def finalize(candidates: list[Outcome], out_dir: Path, on_progress: Any = None) -> list[Any]:
        from workers.finalize import finalize as run_finalize
        from workers.task import load_task

        with task_lock:  # the dense task is only needed again now: load it once, lazily
            if not task_box:
                task_box.append(load_task(spec, ws))
        pairs = [(o.policy, o.metrics) for o in candidates if o.metrics is not None]
        ids = [o.trial_id for o in candidates if o.metrics is not None]
        task = task_box[0]
        infos = run_finalize(task, pairs, spec.finalize, out_dir, on_progress=on_progress)
        dense_test = _dense_test_accuracy(task) if infos else None
        # workers' ArtifactInfo knows its rank, not the trial: ranks follow the candidates' order
        return [
            {**info.to_dict(), "trial_id": ids[info.rank - 1],
             "metrics": {**info.metrics, "dense_test_accuracy": dense_test}}
            for info in infos
        ]

    return Launched(space=pool.space, dense_metrics=pool.dense_metrics, pool=pool, finalize=finalize)


def _dense_test_accuracy(task: Any) -> float | None:
    """The dense model's test-split accuracy, for the report next to the pruned one's."""
    ref = task.info.get("reference") or {}
    if ref.get("test_accuracy") is not None:
        return float(ref["test_accuracy"])
    if task.spec.metric != "accuracy":
        return None
    from search_spaces.reference import evaluate_accuracy

    return float(evaluate_accuracy(task.model, task.splits.test))
