"""The contract every evaluator pool passes (``workers.pool_base.Pool``), Optuna-style.

A pool's test class subclasses :class:`WorkerPoolContract` (pools with worker processes) or
:class:`PoolContract` (the in-process pool, where the evaluator dying is the caller dying: no
worker-death cases) and provides the ``make`` fixture: a function building that pool on the
fakes (``tests.workers.fakes.FakeEvaluator``'s keyword arguments), closed after the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.types import Proposal
from tests.workers.fakes import FakeEvaluator, ListAgent
from workers.loop import run_search
from workers.pool_base import Pool, PoolClosed

MakePool = Callable[..., Pool]


def proposals(n: int, first: int = 0) -> list[Proposal]:
    """``n`` distinct architectures; only trial ``first + 2`` has a ratio of 0.5 (on g0)."""
    return [Proposal(first + i, {"g0": 0.25 * (i % 4), "g1": 0.25 * ((i // 4) % 4)}) for i in range(n)]


def pool_maker(build: Callable[..., Pool]) -> Iterator[MakePool]:
    """The body of a ``make`` fixture: ``build(**fake_kwargs)``, every pool closed afterwards."""
    made: list[Pool] = []

    def make(**kwargs: Any) -> Pool:
        pool = build(**kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


class PoolContract:
    """Evaluate, latency table, cancel, close (a worker dying: :class:`WorkerPoolContract`)."""

    @pytest.fixture
    def make(self) -> Iterator[MakePool]:  # pragma: no cover - each pool's class provides it
        raise NotImplementedError

    def check_replaced(self, pool: Pool, deaths: int) -> None:
        """Pools that count their replaced workers check here that ``deaths`` were replaced."""

    # evaluate -----------------------------------------------------------------------------------
    def test_outcomes_carry_the_proposals_trial_ids_each_once(self, make: MakePool) -> None:
        pool = make()
        assert isinstance(pool, Pool)
        assert pool.space.to_dict() == FakeEvaluator().space.to_dict()
        assert pool.dense_metrics.macs_ratio == 1.0
        batch = proposals(6, first=10)
        out = list(pool.evaluate(batch))
        assert sorted(o.trial_id for o in out) == [p.trial_id for p in batch]
        local = FakeEvaluator()
        for o in out:
            assert o.ok and o.metrics is not None, o.error
            assert o.policy == next(p.policy for p in batch if p.trial_id == o.trial_id)
            expected = local.evaluate(dict(o.policy))
            assert (o.metrics.quality, o.metrics.macs) == (expected.quality, expected.macs)
        assert list(pool.evaluate([])) == []

    def test_an_evaluation_that_raises_is_a_failed_outcome(self, make: MakePool) -> None:
        pool = make(fail_on=0.5)
        out = {o.trial_id: o for o in pool.evaluate(proposals(4))}
        assert sorted(out) == [0, 1, 2, 3]
        assert out[2].error is not None and "cannot evaluate ratio 0.5" in out[2].error
        assert all(out[i].ok for i in (0, 1, 3))
        self.check_replaced(pool, 0)  # the worker survived its trial's error

    def test_the_loop_runs_on_it(self, make: MakePool) -> None:
        pool = make()
        agent = ListAgent(pool.space, [p.policy for p in proposals(5)])
        reports: list[int] = []
        summary = run_search(agent, pool, trials=5, batch_size=2,
                             on_outcome=lambda p, o, c: reports.append(o.trial_id),
                             on_state=lambda s: None, should_stop=lambda: False)
        assert sorted(reports) == [0, 1, 2, 3, 4] and summary.answered == 5 and summary.failed == 0

    # latency table ------------------------------------------------------------------------------
    def test_latency_table(self, make: MakePool) -> None:
        pool = make()
        table = pool.latency_table((0.25, 0.5))
        assert table == FakeEvaluator().latency_table((0.25, 0.5))
        assert set(table.entries) == set(pool.space.names) and table.dense_ms > 0

    # cancel -------------------------------------------------------------------------------------
    def test_cancel_stops_the_batch_and_the_pool_stays_usable(self, make: MakePool) -> None:
        pool = make(delay_s=0.1)
        outcomes = pool.evaluate(proposals(6))
        first = next(outcomes)
        pool.cancel()
        assert list(outcomes) == []  # nothing more of the cancelled batch
        assert first.trial_id in range(6)
        out = list(pool.evaluate(proposals(3, first=100)))
        assert sorted(o.trial_id for o in out) == [100, 101, 102]  # none of the old batch
        assert all(o.ok for o in out)

    def test_cancel_from_another_thread_ends_a_waiting_batch(self, make: MakePool) -> None:
        pool = make(delay_s=0.3)
        batch = proposals(8)
        timer = threading.Timer(0.45, pool.cancel)
        t0 = time.monotonic()
        timer.start()
        out = list(pool.evaluate(batch))
        elapsed = time.monotonic() - t0
        timer.join()
        assert len(out) < len(batch) and elapsed < 0.3 * len(batch)
        assert len({o.trial_id for o in out}) == len(out)
        again = list(pool.evaluate(proposals(1, first=50)))
        assert [o.trial_id for o in again] == [50]

    def test_cancel_with_no_batch_in_flight_changes_nothing(self, make: MakePool) -> None:
        pool = make()
        pool.cancel()
        assert sorted(o.trial_id for o in pool.evaluate(proposals(3))) == [0, 1, 2]

    # close --------------------------------------------------------------------------------------
    def test_close_twice_then_evaluate_raises(self, make: MakePool) -> None:
        pool = make()
        assert pool.closed is False
        pool.close()
        pool.close()
        assert pool.closed
        with pytest.raises(PoolClosed):
            list(pool.evaluate(proposals(1)))

    def test_a_context_manager_closes_it(self, make: MakePool) -> None:
        with make() as pool:
            assert [o.trial_id for o in pool.evaluate(proposals(1))] == [0]
        assert pool.closed


class WorkerPoolContract(PoolContract):
    """The contract of a pool whose evaluators run in worker processes, which can die."""

    # a worker dying mid-batch -------------------------------------------------------------------
    def test_a_worker_dying_mid_batch_is_retried_once(self, make: MakePool, tmp_path: Path) -> None:
        marker = tmp_path / "deaths"
        pool = make(die_on=0.5, die_marker=str(marker), die_times=1)
        out = {o.trial_id: o for o in pool.evaluate(proposals(5))}
        assert sorted(out) == [0, 1, 2, 3, 4]
        assert all(o.ok for o in out.values()), [o.error for o in out.values()]
        assert marker.read_text() == "x"  # it died once, on trial 2, and the retry succeeded
        self.check_replaced(pool, 1)

    def test_a_worker_dying_twice_is_a_clear_error_not_a_hang(self, make: MakePool, tmp_path: Path) -> None:
        marker = tmp_path / "deaths"
        pool = make(die_on=0.5, die_marker=str(marker), die_times=2)
        out = {o.trial_id: o for o in pool.evaluate(proposals(5))}
        assert sorted(out) == [0, 1, 2, 3, 4]
        assert out[2].error is not None and "worker died 2 times" in out[2].error, out[2].error
        assert all(out[i].ok for i in (0, 1, 3, 4)), [out[i].error for i in (0, 1, 3, 4)]
        assert marker.read_text() == "xx"
        self.check_replaced(pool, 2)
        # the pool goes on: a fresh worker took the dead one's place
        assert all(o.ok for o in pool.evaluate(proposals(2, first=20)))
