"""The pool contract (tests/workers/pool_contract.py) over all four pools, on the fakes.

In-process and the task process run in the default lane; the Ray pool (on the session's local
Ray) and the remote pool (in a real supervised driver process, its own Ray) are marked ``ray``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.workers.fakes import FakeEvaluator, FakeFactory, FakeTaskFactory, tiny_space
from tests.workers.pool_contract import (
    MakePool,
    PoolContract,
    WorkerPoolContract,
    pool_maker,
    proposals,
)
from workers.pool import FactoryRayPool, InProcessPool, RayPool
from workers.pool_base import Pool
from workers.process_pool import TaskProcess
from workers.ray_driver import RayDriver, RemotePool


class TestInProcessPool(PoolContract):
    @pytest.fixture
    def make(self) -> Iterator[MakePool]:
        yield from pool_maker(lambda **kw: InProcessPool(FakeEvaluator(**kw)))


class TestTaskProcess(WorkerPoolContract):
    @pytest.fixture
    def make(self) -> Iterator[MakePool]:
        yield from pool_maker(lambda **kw: TaskProcess(factory=FakeTaskFactory(**kw)))

    def check_replaced(self, pool: Pool, deaths: int) -> None:
        assert isinstance(pool, TaskProcess) and pool.restarts == deaths

    def test_a_dead_child_is_restarted(self, make: MakePool, tmp_path: Any) -> None:
        pool = make(die_on=0.5, die_marker=str(tmp_path / "deaths"))
        assert isinstance(pool, TaskProcess)
        first = pool.pid
        out = list(pool.evaluate(proposals(3)))
        assert all(o.ok for o in out) and pool.restarts == 1 and pool.pid != first
        assert {o.metrics.extra["worker_pid"] for o in out if o.trial_id == 2 and o.metrics} == {pool.pid}

    def test_a_broken_task_fails_at_start_with_its_cause(self) -> None:
        with pytest.raises(ValueError, match="no such evaluator"):
            TaskProcess(factory=_BrokenTask())


class _BrokenTask:
    def task(self) -> Any:
        raise ValueError("no such evaluator")

    def evaluator(self, task: Any) -> Any:
        return task


@pytest.mark.ray
@pytest.mark.slow
class TestRayPool(WorkerPoolContract):
    @pytest.fixture
    def make(self, ray_cluster: None) -> Iterator[MakePool]:
        yield from pool_maker(lambda **kw: RayPool(FakeFactory(**kw), tiny_space(), workers=2))

    def check_replaced(self, pool: Pool, deaths: int) -> None:
        assert isinstance(pool, RayPool) and pool.replaced == deaths


@pytest.fixture(scope="module")
def driver() -> Iterator[RayDriver]:
    d = RayDriver(num_cpus=2)
    try:
        yield d
    finally:
        d.stop()


@pytest.mark.ray
@pytest.mark.slow
class TestRemotePool(WorkerPoolContract):
    @pytest.fixture
    def make(self, driver: RayDriver) -> Iterator[MakePool]:
        yield from pool_maker(
            lambda **kw: RemotePool(driver, FactoryRayPool(FakeFactory(**kw), tiny_space(), workers=2)))

    def test_worker_pids_are_the_drivers_actors(self, make: MakePool, driver: RayDriver) -> None:
        from tests.process_tree import descendants

        pool = make()
        assert isinstance(pool, RemotePool)
        pids = pool.worker_pids()
        assert len(pids) == 2 and driver.pid() not in pids
        assert set(pids) <= set(descendants(driver.pid() or 0))


def test_every_pool_is_a_pool() -> None:
    from workers.pool import InProcessPool as InProcess

    assert all(issubclass(cls, Pool) for cls in (InProcess, RayPool, TaskProcess, RemotePool))
