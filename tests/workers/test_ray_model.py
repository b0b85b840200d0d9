"""Ray workers on a real model: parallel equals in-process; a killed worker loses no trial."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from agents.registry import make_agent
from agents.types import Budget, Outcome, Proposal
from tests.workers.conftest import small_spec
from workers.evaluator import Evaluator
from workers.loop import run_search
from workers.pool import InProcessPool, RayPool, make_pool
from workers.task import Task, WorkerSettings

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_parallel_evaluation_equals_in_process(
    ray_cluster: None, task: Task, settings: WorkerSettings
) -> None:
    pool = make_pool(small_spec("resnet20-digits", workers=2), settings)
    assert isinstance(pool, RayPool)
    try:
        space = pool.space
        assert space.to_dict() == task.space.to_dict()
        proposals = [Proposal(i, space.uniform(r)) for i, r in enumerate((0.0, 0.25, 0.5, 0.75))]
        remote = {o.trial_id: o for o in pool.evaluate(proposals)}
        local = {
            o.trial_id: o
            for o in InProcessPool(Evaluator(task, latency_rounds=3)).evaluate(proposals)
        }
        for i in range(len(proposals)):
            assert remote[i].ok, remote[i].error
            r, lo = remote[i].metrics, local[i].metrics
            assert (r.macs, r.params) == (lo.macs, lo.params)
            # same weights, data, calibration batches and channel choice: the same quality
            # (up to one validation sample for float differences between thread counts)
            assert r.quality == pytest.approx(lo.quality, abs=1.0 / 64 + 1e-9)
            assert r.node and r.latency_ms and r.latency_ms > 0
        assert remote[0].metrics.quality == 1.0
        assert len({o.metrics.extra["worker_pid"] for o in remote.values()}) == 2
        dense = pool.dense_metrics
        assert dense.latency_ratio == 1.0 and dense.quality == 1.0
    finally:
        pool.close()


def test_forty_policies_two_workers_one_killed_loses_no_trial(
    ray_cluster: None, settings: WorkerSettings
) -> None:
    spec = small_spec("resnet20-digits", workers=2)
    pool = make_pool(spec, settings)
    assert isinstance(pool, RayPool)
    agent = make_agent("random", pool.space, Budget(macs_ratio=0.6), seed=1)
    reported: list[tuple[Proposal, Outcome, bool]] = []
    victim = pool.worker_pids()[1]
    killed = threading.Event()

    def on_outcome(p: Proposal, o: Outcome, cached: bool) -> None:
        reported.append((p, o, cached))
        if len(reported) == 6 and not killed.is_set():
            # kill a worker process while it is busy with a trial of this batch
            threading.Timer(0.3, os.kill, (victim, signal.SIGKILL)).start()
            killed.set()

    try:
        summary = run_search(
            agent,
            pool,
            trials=40,
            batch_size=8,
            on_outcome=on_outcome,
            on_state=lambda s: None,
            should_stop=lambda: False,
        )
        ids = [p.trial_id for p, _, _ in reported]
        assert sorted(ids) == list(range(40))  # every trial reported, exactly once
        assert summary.answered == 40
        assert killed.is_set() and pool.replaced >= 1
        assert victim not in pool.worker_pids()
        failed = [o for _, o, _ in reported if not o.ok]
        # a trial whose worker died is retried once: none is lost, at most it fails with the cause
        assert len(failed) <= 1, [o.error for o in failed]
        assert all(o.metrics.macs_ratio <= 0.6 + 1e-6 for _, o, _ in reported if o.ok)
    finally:
        pool.close()
