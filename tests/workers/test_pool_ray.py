"""RayPool with a real local Ray and a model-free evaluator: what is particular to it (both
actors used, actors killed from outside, resources). The pool contract
(tests/workers/test_pool_contract.py ``TestRayPool``) covers evaluate, errors, cancel, a worker
dying mid-batch and close."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from agents.types import Proposal
from tests.workers.fakes import FakeEvaluator, FakeFactory, ListAgent
from workers.loop import run_search
from workers.pool import InProcessPool, RayPool, actor_options

pytestmark = pytest.mark.ray


def _proposals(n: int) -> list[Proposal]:
    return [Proposal(i, {"g0": 0.25 * (i % 4), "g1": 0.25 * ((i // 4) % 4)}) for i in range(n)]


def test_ray_pool_equals_in_process_and_uses_both_workers(ray_cluster: None) -> None:
    pool = RayPool(FakeFactory(delay_s=0.05), FakeEvaluator().space, workers=2)
    try:
        props = _proposals(8)
        ray_out = {o.trial_id: o for o in pool.evaluate(props)}
        local = {o.trial_id: o for o in InProcessPool(FakeEvaluator()).evaluate(props)}
        assert sorted(ray_out) == sorted(local) == list(range(8))
        for i in range(8):
            assert ray_out[i].metrics.quality == local[i].metrics.quality
            assert ray_out[i].metrics.macs == local[i].metrics.macs
        assert len({o.metrics.extra["worker_pid"] for o in ray_out.values()}) == 2
        assert pool.dense_metrics.macs_ratio == 1.0
    finally:
        pool.close()


def test_killed_worker_is_replaced_and_its_trial_retried(ray_cluster: None) -> None:
    pool = RayPool(FakeFactory(delay_s=0.3), FakeEvaluator().space, workers=2)
    try:
        victim = pool.worker_pids()[0]
        killer = threading.Timer(0.5, os.kill, (victim, signal.SIGKILL))
        killer.start()
        out = list(pool.evaluate(_proposals(8)))
        killer.join()
        assert sorted(o.trial_id for o in out) == list(range(8))
        assert all(o.ok for o in out), [o.error for o in out if not o.ok]
        assert pool.replaced == 1
        assert victim not in pool.worker_pids()
    finally:
        pool.close()


def test_trial_whose_worker_dies_twice_fails_and_run_completes(ray_cluster: None) -> None:
    import ray

    pool = RayPool(FakeFactory(delay_s=0.4), FakeEvaluator().space, workers=1)
    agent = ListAgent(pool.space, [p.policy for p in _proposals(3)])
    reports = []

    def kill_soon() -> None:
        for _ in range(2):  # kill whichever actor is running trial 0, twice
            time.sleep(0.25)
            ray.kill(pool.actors[0], no_restart=True)
            time.sleep(0.3)

    killer = threading.Thread(target=kill_soon)
    try:
        killer.start()
        summary = run_search(
            agent,
            pool,
            trials=3,
            batch_size=3,
            on_outcome=lambda p, o, c: reports.append(o),
            on_state=lambda s: None,
            should_stop=lambda: False,
        )
        killer.join()
        assert sorted(o.trial_id for o in reports) == [0, 1, 2]
        assert summary.answered == 3
        assert pool.replaced >= 1
        failed = [o for o in reports if not o.ok]
        assert all("died" in o.error for o in failed)
    finally:
        pool.close()


def test_cuda_target_without_gpus_fails_fast(ray_cluster: None) -> None:
    with pytest.raises(RuntimeError, match="no node with a GPU"):
        actor_options("cuda", 2)
    with pytest.raises(RuntimeError, match="no node with a GPU"):
        RayPool(FakeFactory(), FakeEvaluator().space, workers=1, device="cuda")
    with pytest.raises(RuntimeError, match="workers=64 needs 64 CPUs"):
        actor_options("cpu", 64)
    with pytest.raises(ValueError, match="target.device"):
        actor_options("tpu", 1)


def test_broken_worker_set_up_fails_at_pool_creation(ray_cluster: None) -> None:
    with pytest.raises(Exception, match="no such evaluator"):
        RayPool(_Broken(), FakeEvaluator().space, workers=1)


class _Broken:
    def __call__(self) -> FakeEvaluator:
        raise ValueError("no such evaluator")
